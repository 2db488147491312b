"""The training program end to end on the CPU: loss goes down on real text, exact resume
after a crash, the same curve on any mesh and on two processes, NaN, init_from, errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import tiny
from fwl_jax.data import prepare_dataset
from fwl_jax.train import (Checkpoints, ConfigError, Trainer, TrainingDiverged, optim,
                           train_and_evaluate)
from fwl_jax.models import make_mesh

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Shakespeare, prepared once per test process at the tiny config's vocabulary."""
    folder = tmp_path_factory.mktemp("data")
    prepare_dataset("shakespeare", folder, vocab_size=tiny.get_config().data.vocab_size)
    return folder


def tiny_config(data_dir, **overrides):
    config = tiny.get_config()
    config.data.data_dir = str(data_dir)
    config.log.progress_bar = False
    config.update_from_flattened_dict(overrides)
    return config


def losses(workdir) -> dict[int, float]:
    """Training loss per step from metrics.jsonl (the last record of a step wins)."""
    out = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            out[record["step"]] = record["loss"]
    return out


def run_process(workdir, overrides, *, devices=1, kill_at=0, env=None):
    command = [sys.executable, str(ROOT / "tests" / "run_training.py"), str(workdir),
               json.dumps(overrides), f"--devices={devices}", f"--kill-at={kill_at}"]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, err


def test_tiny_trains_and_writes_everything(data_dir, tmp_path):
    final = train_and_evaluate(tiny_config(data_dir), tmp_path)
    curve = losses(tmp_path)
    assert sorted(curve) == list(range(1, 31))
    assert np.mean([curve[s] for s in range(26, 31)]) < np.mean([curve[s] for s in range(1, 6)]) - 0.8
    assert final["eval/perplexity"] < 1000 and np.isfinite(final["eval/loss"])
    assert Checkpoints(tmp_path / "checkpoints", keep=3).latest_step() == 30
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [10, 20, 30]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-2])
    assert {"learning_rate", "grad_norm", "tokens_per_s", "step_size/W1", "perplexity"} <= set(record)
    assert record["step_size/W1"] != 0.01, "the step sizes are trained"


def test_resume_after_a_crash_is_exact(data_dir, tmp_path):
    overrides = {"data.data_dir": str(data_dir), "train.num_steps": 16,
                 "checkpoint.every_steps": 5, "eval.every_steps": 0,
                 "checkpoint.async_save": False, "log.progress_bar": False}
    reference = run_process(tmp_path / "reference", overrides)
    crashed = run_process(tmp_path / "crashed", overrides, kill_at=13)
    assert finish(reference)[0] == 0
    code, err = finish(crashed)
    assert code == -signal.SIGKILL, err[-2000:]
    assert max(losses(tmp_path / "crashed")) == 11  # step 12 is logged once 13 runs
    code, err = finish(run_process(tmp_path / "crashed", overrides))
    assert code == 0, err[-2000:]
    assert losses(tmp_path / "crashed") == losses(tmp_path / "reference")  # bitwise


@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_meshes_give_the_same_curve(data_dir, tmp_path, mesh):
    common = {"train.num_steps": 6, "eval.every_steps": 0, "checkpoint.every_steps": 6}
    train_and_evaluate(tiny_config(data_dir, **common), tmp_path / "one",
                       devices=jax.devices()[:1])
    sizes = dict(zip(("mesh.data", "mesh.fsdp", "mesh.tensor"), mesh))
    train_and_evaluate(tiny_config(data_dir, **common, **sizes), tmp_path / "many")
    one, many = losses(tmp_path / "one"), losses(tmp_path / "many")
    np.testing.assert_allclose([many[s] for s in sorted(one)], [one[s] for s in sorted(one)],
                               rtol=2e-5)


def test_resume_on_another_mesh(data_dir, tmp_path):
    """A checkpoint written sharded over 8 devices (FSDP 8) resumes on 4 (FSDP 2 x tensor 2)
    and continues the same loss curve."""
    import shutil
    common = {"train.num_steps": 6, "eval.every_steps": 0, "checkpoint.every_steps": 3,
              "checkpoint.async_save": False}
    train_and_evaluate(tiny_config(data_dir, **common, **{"mesh.data": 1, "mesh.fsdp": 8}), tmp_path / "run")
    reference = losses(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")  # as if stopped after step 3's checkpoint
    train_and_evaluate(tiny_config(data_dir, **common, **{"mesh.data": 1, "mesh.fsdp": 2, "mesh.tensor": 2}),
                       tmp_path / "run", devices=jax.devices()[:4])
    steps = [json.loads(line).get("step") for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps.count(4) == 2 and steps.count(3) == 1, "steps 4-6 ran again on the new mesh"
    resumed = losses(tmp_path / "run")
    np.testing.assert_allclose([resumed[s] for s in (4, 5, 6)], [reference[s] for s in (4, 5, 6)], rtol=2e-5)
    assert Checkpoints(tmp_path / "run" / "checkpoints", keep=3).latest_step() == 6


def test_two_processes_match_one(data_dir, tmp_path):
    overrides = {"data.data_dir": str(data_dir), "train.num_steps": 6,
                 "eval.every_steps": 3, "checkpoint.every_steps": 3, "log.progress_bar": False}
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    workers = [run_process(tmp_path / "two", overrides, devices=4, env={
        "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(i)}) for i in range(2)]
    single = run_process(tmp_path / "one", overrides, devices=8)
    for process in [*workers, single]:
        code, err = finish(process)
        assert code == 0, err[-3000:]
    np.testing.assert_allclose(list(losses(tmp_path / "two").values()),
                               list(losses(tmp_path / "one").values()), rtol=2e-5)
    assert Checkpoints(tmp_path / "two" / "checkpoints", keep=3).latest_step() == 6


def test_nan_stops_and_keeps_the_last_checkpoint(data_dir, tmp_path, monkeypatch):
    real = optim.learning_rate_schedule

    def poisoned(train):
        schedule = real(train)
        return lambda step: jax.numpy.where(step >= 7, jax.numpy.nan, schedule(step))
    monkeypatch.setattr(optim, "learning_rate_schedule", poisoned)
    config = tiny_config(data_dir, **{"checkpoint.every_steps": 5, "eval.every_steps": 0})
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 9.*step 5\) is intact"):
        train_and_evaluate(config, tmp_path)
    monkeypatch.setattr(optim, "learning_rate_schedule", real)
    checkpoints = Checkpoints(tmp_path / "checkpoints", keep=3)
    assert checkpoints.latest_step() == 5
    trainer = Trainer(config, make_mesh(devices=jax.devices()[:1]))
    state, data_state = checkpoints.restore(5, trainer.abstract_state())
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))
    assert data_state["next_index"] == 5


def test_init_from_a_plain_run(data_dir, tmp_path):
    plain = tiny_config(data_dir, **{"model.fwl_enabled": False, "train.num_steps": 4,
                                     "eval.every_steps": 0})
    train_and_evaluate(plain, tmp_path / "plain")
    fwl = tiny_config(data_dir, **{"train.num_steps": 1, "train.learning_rate": 0.0,
                                   "eval.every_steps": 0, "init_from": str(tmp_path / "plain")})
    train_and_evaluate(fwl, tmp_path / "fwl")
    mesh = make_mesh(devices=jax.devices()[:1])
    before = Checkpoints(tmp_path / "plain" / "checkpoints", keep=3).restore(
        4, Trainer(plain, mesh).abstract_state())[0].params
    after = Checkpoints(tmp_path / "fwl" / "checkpoints", keep=3).restore(
        1, Trainer(fwl, mesh).abstract_state())[0].params
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(before), jax.device_get(after))


def test_resume_with_another_model_is_refused(data_dir, tmp_path):
    base = {"train.num_steps": 2, "eval.every_steps": 0, "checkpoint.every_steps": 2}
    train_and_evaluate(tiny_config(data_dir, **base), tmp_path)
    changed = tiny_config(data_dir, **{**base, "model.d_model": 64, "train.num_steps": 3})
    with pytest.raises(ConfigError, match=r"model.d_model: 32 -> 64.*allow_config_mismatch"):
        train_and_evaluate(changed, tmp_path)
    longer = tiny_config(data_dir, **{**base, "train.num_steps": 3, "fwl.unembed_chunk": 4,
                                      "fwl.gradient_chunk": 2, "model.remat": "full", "fwl.attention_method": "chunked"})
    train_and_evaluate(longer, tmp_path)  # more steps, computed another way: the same run
    assert max(losses(tmp_path)) == 3


def test_sigterm_saves_and_exits(data_dir, tmp_path):
    process = run_process(tmp_path, {"data.data_dir": str(data_dir), "train.num_steps": 100000,
                                     "checkpoint.every_steps": 100000, "eval.every_steps": 0,
                                     "log.progress_bar": False})
    deadline = time.monotonic() + 240
    while not (tmp_path / "metrics.jsonl").exists() or len(losses(tmp_path)) < 3:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 0, err[-2000:]
    saved = Checkpoints(tmp_path / "checkpoints", keep=3).latest_step()
    assert saved is not None and saved >= 3


def test_command_line_errors_are_one_line(tmp_path):
    def run(*flags):
        result = subprocess.run([sys.executable, "train.py", "--config=configs/tiny.py",
                                 f"--workdir={tmp_path}", *flags], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode != 0
        return result.stderr.strip().splitlines()[-1]
    assert run("--config.train.seed=1", "--config.model.d_modle=3") == (
        "error: --config.model.d_modle is not a config field; did you mean "
        "--config.model.d_model?")
    line = run("--config.train.batch_size=6", "--config.train.grad_accum_steps=4")
    assert line.startswith("error: train.batch_size 6 must be a multiple of")
    line = run(f"--config.data.data_dir={tmp_path}", "--config.data.dataset=text_files",
               f"--config.data.source={tmp_path}/missing")
    assert line.startswith("error: text folder") and "does not exist" in line


def test_gradient_accumulation_matches_one_batch(data_dir):
    from fwl_jax.data import train_iterator
    config = tiny_config(data_dir)
    batch = next(train_iterator(prepare_dataset("shakespeare", data_dir, vocab_size=1000)
                                .split("train"), 64, 8))
    mesh = make_mesh(devices=jax.devices()[:2])
    results = []
    for accum in (1, 4):
        config.train.grad_accum_steps = accum
        trainer = Trainer(config, mesh)
        state = trainer.init_state(0)
        for _ in range(2):
            state, metrics = trainer.train_step(state, trainer.global_batch(batch), jax.random.key(0))
        results.append((jax.device_get(state.params), float(metrics["loss"])))
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 results[0][0], results[1][0])


def test_global_batch_drops_the_segment_ids_of_one_document_rows(data_dir):
    """Rows that are each inside one document need no attention mask: their ids become None,
    for the same loss; a batch with any row of two documents keeps them."""
    from fwl_jax.timing import random_batch
    config = tiny_config(data_dir)
    trainer = Trainer(config, make_mesh(devices=jax.devices()[:1]))
    state = trainer.init_state(0)
    one = random_batch(4, config.data.seq_len, config.data.vocab_size, documents=1)
    one["segment_ids"] = np.full_like(one["segment_ids"], 7)
    dropped = trainer.global_batch(one)
    assert dropped["segment_ids"] is None
    kept = {k: jax.numpy.asarray(v) for k, v in one.items()}
    _, with_ids = trainer._train(state, kept, jax.random.key(0))
    _, without = trainer._train(trainer.init_state(0), dropped, jax.random.key(0))
    np.testing.assert_allclose(float(with_ids["loss"]), float(without["loss"]), rtol=1e-6)
    packed = random_batch(4, config.data.seq_len, config.data.vocab_size, documents=1)
    packed["segment_ids"][2, -5:] = 2  # one row ends with another document
    np.testing.assert_array_equal(trainer.global_batch(packed)["segment_ids"], packed["segment_ids"])


@pytest.mark.parametrize("name", ["tiny", "shakespeare_small", "books_base", "wt103", "bench_ref", "bench_1b"])
def test_shipped_configs_are_valid(name):
    import importlib
    from fwl_jax.train.config import check_train_config, model_config
    config = importlib.import_module(f"configs.{name}").get_config()
    check_train_config(config)
    assert model_config(config).max_len == config.data.seq_len


def test_peak_table_and_override():
    from fwl_jax.train.metrics import peak_tflops

    class Device:
        device_kind = "NVIDIA H100 80GB HBM3"
    assert peak_tflops(device=Device()) == 989.0
    assert peak_tflops(123.0, device=Device()) == 123.0
    Device.device_kind = "cpu"
    assert peak_tflops(device=Device()) is None


def test_corrupt_checkpoint_is_a_clear_error_and_kept(data_dir, tmp_path):
    config = tiny_config(data_dir, **{"train.num_steps": 2, "eval.every_steps": 0,
                                      "checkpoint.every_steps": 2})
    train_and_evaluate(config, tmp_path)
    state_dir = tmp_path / "checkpoints" / "2" / "state"
    damaged = [p for p in state_dir.rglob("*") if p.is_file() and p.stat().st_size > 100]
    for path in damaged:
        path.write_bytes(b"\0" * 16)
    config.train.num_steps = 3
    from fwl_jax.train import CheckpointError
    with pytest.raises(CheckpointError, match=r"checkpoints/2 cannot be restored.*move that folder"):
        train_and_evaluate(config, tmp_path)
    assert all(p.exists() for p in damaged), "nothing of the user's checkpoint is deleted"


def test_xla_flags_are_added_without_overriding_the_users(monkeypatch):
    from fwl_jax.train import distributed
    from fwl_jax.train.distributed import MATMUL_FLAGS, OVERLAP_FLAGS, TRAINING_FLAGS, add_xla_flags
    monkeypatch.setattr(distributed, "_backend_started", lambda: False)  # as in a fresh program
    user = ["--xla_force_host_platform_device_count=8", "--xla_gpu_enable_pipelined_all_gather=false"]
    monkeypatch.setenv("XLA_FLAGS", " ".join(user))
    value = add_xla_flags()
    parts = value.split()
    assert parts[:2] == user and "--xla_gpu_enable_pipelined_all_gather=true" not in parts
    assert parts[2:] == list(OVERLAP_FLAGS[1:])
    assert add_xla_flags() == value  # added once
    assert add_xla_flags(TRAINING_FLAGS) == " ".join([value, *MATMUL_FLAGS])  # training's on top
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_dot_merger_threshold_mb=32")  # the user's setting wins
    assert add_xla_flags(TRAINING_FLAGS).split() == ["--xla_gpu_dot_merger_threshold_mb=32", *OVERLAP_FLAGS]
    monkeypatch.delenv("XLA_FLAGS")
    assert add_xla_flags().split() == list(OVERLAP_FLAGS)
    # A value that is not a flag names a flag file (XLA reads it): left alone.
    monkeypatch.setenv("XLA_FLAGS", "/tmp/xla_flags.txt")
    assert add_xla_flags() == "/tmp/xla_flags.txt" == os.environ["XLA_FLAGS"]


def test_xla_flags_are_left_alone_once_jax_has_started(monkeypatch):
    from fwl_jax.train.distributed import add_xla_flags
    jax.numpy.ones(1).block_until_ready()  # the backend is up: XLA has read its flags
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert add_xla_flags() == "--xla_force_host_platform_device_count=8" == os.environ["XLA_FLAGS"]


def test_programs_start_with_the_xla_flags():
    """A program started afresh (run_reporting_errors, as eval.py, demo.py and study.py call
    it) runs with the flags in XLA_FLAGS; train.py adds training's."""
    from fwl_jax.train.distributed import OVERLAP_FLAGS, TRAINING_FLAGS
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"

    def flags_of(code, error=""):
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                timeout=120, cwd=ROOT)
        assert result.returncode == (1 if error else 0), result.stderr[-2000:]
        if error:
            assert result.stderr.strip().splitlines()[-1].startswith(error)
        return result.stdout.split()
    assert flags_of("import os, jax; from fwl_jax.cli import run_reporting_errors; "
                    "run_reporting_errors(lambda: jax.numpy.ones(1).block_until_ready()); "
                    "print(os.environ['XLA_FLAGS'])") == list(OVERLAP_FLAGS)
    # train.py, stopped by a config error inside the program (after its flags are set).
    assert flags_of("import atexit, os, runpy, sys; "
                    "atexit.register(lambda: print(os.environ.get('XLA_FLAGS'))); "
                    "sys.argv = ['train.py', '--config=configs/tiny.py', '--workdir=/nonexistent/w', "
                    "'--config.train.batch_size=6', '--config.train.grad_accum_steps=4']; "
                    "runpy.run_path('train.py', run_name='__main__')",
                    error="error: train.batch_size 6 must be") == list(TRAINING_FLAGS)


def test_xla_flags_are_known_to_this_jax():
    """XLA aborts a process whose XLA_FLAGS names a flag it does not know: the flags training
    sets must still exist after a JAX upgrade."""
    from fwl_jax.train.distributed import TRAINING_FLAGS
    env = {**os.environ, "XLA_FLAGS": " ".join(TRAINING_FLAGS), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "3.0", result.stderr[-2000:]
    env["XLA_FLAGS"] = "--xla_gpu_no_such_flag=true"  # the test can fail
    bad = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.ones(3).sum()"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
