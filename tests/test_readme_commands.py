"""Every `python ...` command the README shows outside its ```sh blocks (those run as written
in test_readme.py) runs at a tiny size: the same program, config file and flags, with
overrides appended that shrink the model, the data and the run (a later flag wins). So a
renamed flag, config field or file in a GPU-sized command fails here."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

MODEL = ["--config.data.vocab_size=400", "--config.data.seq_len=32", "--config.model.d_model=32",
         "--config.model.num_layers=1", "--config.model.num_heads=2", "--config.model.mlp_dim=64",
         "--config.train.batch_size=8", "--config.eval.batch_size=8", "--config.log.progress_bar=False"]
DATA = ["--config.data.dataset=text_files", "--config.data.source={corpus}", "--config.data.data_dir={data}"]
RUN = ["--config.train.num_steps=2", "--config.train.warmup_steps=1", "--config.checkpoint.every_steps=2",
       "--config.eval.every_steps=0"]
SHRINK = {
    "train.py": MODEL + DATA + RUN,
    "study.py": MODEL + DATA + RUN + ["--runs=plain,fwl", "--config.eval.ms_batches=2",
                                      "--config.study.sgd_sweep=1e-2", "--config.study.rms_sweep=1e-4",
                                      "--config.study.step_size_sweep=1e-2"],
    "bench/step.py": MODEL + ["--steps=1", "--warmup=1"],
    "bench/eval_cost.py": MODEL + ["--documents=2", "--doc_len=64", "--segment_len=16"],
    "bench/scaling.py": MODEL + ["--steps=1", "--warmup=1", "--devices=1,2", "--layouts=data,fsdp"],
    "bench/linear_attention.py": ["--grid=2,40,8,16", "--steps=1", "--dtype=float32", "--matmul_size=64"],
    "bench/attention.py": ["--shape=2,32,2,8", "--segments=1,3", "--impls=xla", "--dtype=float32", "--steps=1"],
    "bench/data_pipeline.py": ["--dataset=text_files", "--source={corpus}", "--vocab_size=400", "--seq_len=32",
                               "--batch_size=2", "--batches=3"],
    "bench/first_look.py": ["--tiny"],
    "bench/optimizer.py": MODEL + ["--steps=1", "--warmup=1"],
}


def _commands() -> list[str]:
    """README commands outside ```sh blocks: indented lines and inline code."""
    text = re.sub(r"```sh\n.*?```", "", README, flags=re.S)
    found = re.findall(r"(?:^    |`)(python [^`\n#]+)", text, flags=re.M)
    return sorted({c.strip() for c in found})


def test_every_readme_command_is_covered():
    scripts = {shlex.split(c)[1] for c in _commands()}
    assert scripts == set(SHRINK), "a README command without a tiny form here (or the reverse)"


@pytest.mark.parametrize("command", _commands())
def test_readme_command_runs_tiny(command, tmp_path):
    import data_fixtures
    data_fixtures.write_text_corpus(tmp_path / "corpus")
    for name in ("train.py", "eval.py", "study.py", "configs", "bench"):
        (tmp_path / name).symlink_to(ROOT / name)
    fill = {"corpus": tmp_path / "corpus", "data": tmp_path / "data"}
    argv = shlex.split(command.replace("=DATA", f"={tmp_path / 'data'}"))
    argv = [sys.executable, *argv[1:], *(a.format(**fill) for a in SHRINK[argv[1]])]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stderr[-3000:]}"
