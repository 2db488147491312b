"""`train_and_evaluate(config, workdir)`: the training program's whole body.

The host never waits on the step it just dispatched: each step's scalars are fetched while
the next step runs (a NaN is therefore caught one step late, always before a checkpoint is
written). SIGTERM or Ctrl-C saves a checkpoint and stops; restarting with the same
workdir resumes from the latest checkpoint with the data iterator where it was.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from fwl_jax.data import prepare_dataset, train_iterator
from fwl_jax.eval.scoring import WindowScorer, score_split
from fwl_jax.models import flops_per_token, make_mesh
from fwl_jax.train import config as config_lib
from fwl_jax.train.checkpoint import Checkpoints, restore_params
from fwl_jax.train.distributed import maybe_initialize_distributed
from fwl_jax.train.metrics import MetricWriter, peak_tflops
from fwl_jax.train.step import Trainer

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite."""


def _check_identity(workdir: Path, config, resuming: bool) -> None:
    path = workdir / "config.json"
    current = config_lib.identity(config)
    if resuming and path.exists():
        changed = config_lib.differences(json.loads(path.read_text()), current)
        if changed and not config.allow_config_mismatch:
            raise config_lib.ConfigError(
                f"the checkpoint in {workdir} was trained with another config "
                f"({'; '.join(changed)}); use another workdir, or pass "
                "--config.allow_config_mismatch=True to resume anyway.")
    if jax.process_index() == 0 and not (resuming and path.exists()):
        path.write_text(json.dumps(current, indent=1))


def _check_batch(config, mesh) -> None:
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    for name, size in (("train.batch_size", config.train.batch_size // config.train.grad_accum_steps),
                       ("eval.batch_size", config.eval.batch_size)):
        if size % shards or size % jax.process_count():
            raise config_lib.ConfigError(
                f"{name} ({size} rows per micro-batch) must be a multiple of the "
                f"{shards} data-parallel shards of the mesh and of the "
                f"{jax.process_count()} processes.")


def evaluate(trainer: Trainer, scorer: WindowScorer, params, split, config) -> dict[str, float]:
    """Perplexity over the first `eval.max_documents` validation documents (all if 0),
    whole, with the fast-weight state carried as `eval.carry` says (as eval.py does)."""
    with trainer.context():
        scores, _ = score_split(scorer, params, split.head(config.eval.max_documents),
                                seq_len=config.data.seq_len, batch_size=config.eval.batch_size)
    return {"eval/loss": scores.mean_nll,
            "eval/perplexity": math.exp(min(scores.mean_nll, 50.0)),
            "eval/tokens": float(len(scores.nll))}


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.requested, self._previous = False, {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, *,
                       devices=None) -> dict[str, float]:
    """Trains (or resumes) the run in `workdir`; returns the last logged metrics."""
    maybe_initialize_distributed(config)
    config_lib.check_train_config(config)
    workdir = Path(workdir).expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    _check_batch(config, mesh)
    process, processes = jax.process_index(), jax.process_count()
    data = prepare_dataset(config.data.dataset, config.data.data_dir,
                           vocab_size=config.data.vocab_size, seed=config.data.seed,
                           process_index=process, process_count=processes,
                           **config_lib.builder_options(config.data))
    trainer = Trainer(config, mesh)
    checkpoints = Checkpoints(workdir / "checkpoints", keep=config.checkpoint.keep,
                              async_save=config.checkpoint.async_save)
    batches = train_iterator(data.split("train"), config.data.seq_len, config.train.batch_size,
                             seed=config.data.seed, process_index=process,
                             process_count=processes, num_threads=config.data.num_threads,
                             prefetch=config.data.prefetch)
    latest = checkpoints.latest_step()
    _check_identity(workdir, config, resuming=latest is not None)
    if latest is not None:
        state, data_state = checkpoints.restore(latest, trainer.abstract_state())
        batches.set_state(data_state)
    else:
        state = trainer.init_state(config.train.seed)
        if config.init_from:
            state = state.replace(params=restore_params(
                config.init_from, trainer.abstract_state().params))
    start = int(jax.device_get(state.step))
    writer = MetricWriter(workdir, total_steps=config.train.num_steps, initial_step=start,
                          enabled=process == 0, progress_bar=config.log.progress_bar)
    try:
        return _loop(config, trainer, state, batches, checkpoints, writer, data, start)
    finally:
        writer.close()
        checkpoints.close()



def _loop(config, trainer, state, batches, checkpoints, writer, data, start) -> dict:
    train, rng = config.train, jax.random.key(config.train.seed)
    micro_batch = config.train.batch_size // config.train.grad_accum_steps  # global rows the step's model traces
    flops = flops_per_token(trainer.model_config, config.data.seq_len, training=True, batch_size=micro_batch)
    peak = peak_tflops(config.log.peak_tflops)
    pending, last, window = None, {}, {"tokens": 0.0, "time": time.perf_counter()}
    scorer = WindowScorer(trainer.model, trainer.mesh, carry=config.eval.carry,
                          carry_decay=config.eval.carry_decay)  # compiled once, reused

    def settle(item) -> dict:
        """Fetches a finished step's scalars; stops on NaN; logs on schedule."""
        step, metrics = item
        scalars = jax.device_get(metrics)
        for name in ("loss", "grad_norm"):
            if not np.isfinite(scalars[name]):
                checkpoints.wait()
                raise TrainingDiverged(
                    f"{name} is {float(scalars[name])} at step {step}; training stopped. "
                    f"The last checkpoint (step {checkpoints.latest_step()}) is intact: "
                    "lower train.learning_rate or raise train.warmup_steps and restart.")
        window["tokens"] += float(scalars["tokens"])
        writer.advance()
        if step % config.log.every_steps and step != train.num_steps:
            return {}
        elapsed = time.perf_counter() - window["time"]
        rate = window["tokens"] / max(elapsed, 1e-9)
        out = {"loss": scalars["loss"], "perplexity": math.exp(min(scalars["loss"], 50.0)),
               "learning_rate": scalars["learning_rate"], "grad_norm": scalars["grad_norm"],
               "tokens_per_s": rate,
               **{f"step_size/{k}": v for k, v in scalars["step_size"].items()}}
        if peak:
            out["mfu"] = rate * flops / (peak * 1e12 * jax.device_count())
        writer.write(step, out)
        window.update(tokens=0.0, time=time.perf_counter())
        return out

    with _StopRequest() as stop:
        for step in range(start + 1, train.num_steps + 1):
            batch = trainer.global_batch(next(batches))
            state, metrics = trainer.train_step(state, batch, rng)
            if pending is not None:
                last = settle(pending) or last
            pending = (step, metrics)
            due_checkpoint = step % config.checkpoint.every_steps == 0 or step == train.num_steps
            due_eval = config.eval.every_steps and (step % config.eval.every_steps == 0
                                                    or step == train.num_steps)
            if due_checkpoint or due_eval or stop.requested:
                last, pending = settle(pending) or last, None
            if due_eval:
                scores = evaluate(trainer, scorer, state.params, data.split("validation"), config)
                writer.write(step, scores)
                last = {**last, **scores}
            if due_checkpoint or stop.requested:
                checkpoints.save(step, state, batches.get_state())
            if stop.requested:
                log.warning("stop requested: saved step %d and stopped", step)
                break
        if pending is not None:
            last = settle(pending) or last
    checkpoints.wait()
    return {k: float(v) for k, v in last.items()}
