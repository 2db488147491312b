"""`evaluate_run(config, workdir)`: the evaluation program's body (eval.py calls it).

Loads the checkpoint, scores the split in the chosen mode (after a sweep on the
validation split, if asked), and writes `workdir/eval/<split>_<mode>[_<carry>].json`
(report) and `.npz` (per-token results).

Modes: `standard` (the model as configured); `dynamic` (the model as configured, adapted
by dynamic evaluation); `fwl_test_time` (fast weights switched on; a checkpoint trained
without them gets the step sizes `eval.step_sizes`); `fwl+dynamic` (both).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import ml_collections
from tqdm import tqdm

from fwl_jax.data import prepare_dataset, train_iterator
from fwl_jax.eval import results
from fwl_jax.eval.dynamic import DynamicScorer, DynamicSettings, mean_squared_gradients
from fwl_jax.eval.scoring import CARRY_POLICIES, WindowScorer, score_split
from fwl_jax.models import flops_per_token, make_mesh
from fwl_jax.models.flops import flop_breakdown
from fwl_jax.ops.fwl import FAST_TENSORS, inverse_softplus
from fwl_jax.train import config as config_lib
from fwl_jax.train.checkpoint import restore_params
from fwl_jax.train.distributed import maybe_initialize_distributed
from fwl_jax.train.step import Trainer

MODES = ("standard", "dynamic", "fwl_test_time", "fwl+dynamic")
FAST_WEIGHTS_ON = ("fwl_test_time", "fwl+dynamic")
DYNAMIC = ("dynamic", "fwl+dynamic")


def _check(config) -> None:
    e = config.eval
    if e.mode not in MODES:
        raise config_lib.ConfigError(f"eval.mode must be one of {', '.join(MODES)}, got "
                                     f"{e.mode!r}{config_lib.suggest(e.mode, MODES)}.")
    if e.carry not in CARRY_POLICIES:
        raise config_lib.ConfigError(f"eval.carry must be one of {', '.join(CARRY_POLICIES)}, "
                                     f"got {e.carry!r}.")
    if e.mode in DYNAMIC:
        try:
            _dynamic_settings(config, e.lr).check(config.data.seq_len)
        except ValueError as error:
            raise config_lib.ConfigError(f"eval: {error}.") from None


def parse_step_sizes(text: str) -> dict[str, float]:
    """`"0.01"` -> the same step size for all six tensors; six values -> one each."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, len(FAST_TENSORS)) or not all(v > 0 for v in values):
        raise config_lib.ConfigError(
            f"eval.step_sizes must be one positive number or six ({','.join(FAST_TENSORS)}), "
            f"got {text!r}.")
    return dict(zip(FAST_TENSORS, values * (len(FAST_TENSORS) // len(values))))


def with_step_sizes(params, step_sizes: dict[str, float]):
    """The parameters with the head's step sizes replaced (raw = softplus^-1 of the value)."""
    raw = {n: jax.numpy.full_like(params["head"]["step_size_raw"][n], inverse_softplus(v))
           for n, v in step_sizes.items()}
    return {**params, "head": {**params["head"], "step_size_raw": raw}}


def _dynamic_settings(config, lr: float) -> DynamicSettings:
    e = config.eval
    return DynamicSettings(segment_len=e.segment_len or config.data.seq_len, lr=lr,
                           rule=e.rule, decay=e.decay, eps=e.eps, rms_floor=e.rms_floor,
                           params=e.dynamic_params, merge_every=e.merge_every)


def _sweep_values(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise config_lib.ConfigError(f"eval.sweep must be comma-separated numbers, got "
                                     f"{text!r}.") from None


class _Evaluator:
    """Everything one evaluation needs, built once; `run(split, value)` scores a split."""

    def __init__(self, config, workdir: Path, devices):
        e, self.config = config.eval, config
        self.test_time = e.mode in FAST_WEIGHTS_ON and not config.model.fwl_enabled
        if e.mode in FAST_WEIGHTS_ON:
            config = config.copy_and_resolve_references()
            with config.unlocked():
                config.model.fwl_enabled = True
            self.config = config
        self.mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                              devices=devices)
        self.data = prepare_dataset(config.data.dataset, config.data.data_dir,
                                    vocab_size=config.data.vocab_size, seed=config.data.seed,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count(),
                                    **config_lib.builder_options(config.data))
        self.trainer = Trainer(config, self.mesh)
        with self.trainer.context():
            self.params = restore_params(workdir, self.trainer.abstract_state().params,
                                         step=e.checkpoint_step or None)
        self.ms = None
        if e.mode in DYNAMIC and e.rule == "rms":
            self.ms = self._mean_squared_gradients()

    def _mean_squared_gradients(self):
        e, t = self.config.eval, self.trainer
        rows = train_iterator(self.data.split("train"), self.config.data.seq_len, e.batch_size,
                              seed=self.config.data.seed, process_index=jax.process_index(),
                              process_count=jax.process_count())
        batches = (t.global_batch(next(rows)) for _ in range(e.ms_batches))
        with t.context():
            return mean_squared_gradients(t.model, self.params, e.dynamic_params, batches,
                                          segment_len=e.segment_len or self.config.data.seq_len)

    def settings(self, value: float | None) -> dict:
        e = self.config.eval
        out = {"carry": e.carry, "carry_decay": e.carry_decay, "batch_size": e.batch_size,
               "checkpoint_step": e.checkpoint_step or "latest", "seq_len": self.config.data.seq_len,
               "fwl_enabled": self.config.model.fwl_enabled}
        if self.test_time:
            out["step_sizes"] = (dict.fromkeys(FAST_TENSORS, value) if e.mode == "fwl_test_time"
                                 and value is not None else parse_step_sizes(e.step_sizes))
        if e.mode in DYNAMIC:
            out["dynamic"] = dataclasses.asdict(_dynamic_settings(self.config, value or e.lr))
        return out

    def run(self, split_name: str, value: float | None = None):
        e, t = self.config.eval, self.trainer
        settings = self.settings(value)
        params = with_step_sizes(self.params, settings["step_sizes"]) if self.test_time \
            else self.params
        if e.mode in DYNAMIC:
            scorer = DynamicScorer(t.model, self.mesh, _dynamic_settings(self.config, value or e.lr),
                                   carry=e.carry, carry_decay=e.carry_decay, ms=self.ms)
        else:
            scorer = WindowScorer(t.model, self.mesh, carry=e.carry, carry_decay=e.carry_decay)
        split = self.data.split(split_name).head(e.max_documents)
        with t.context():
            scores, timing = _score(scorer, params, split, self.config, split_name)
        return split, scores, timing, settings


def evaluate_run(config: ml_collections.ConfigDict, workdir: str | Path, *,
                 devices=None) -> dict:
    """Scores `config.eval.split` with the run's checkpoint; returns the report."""
    maybe_initialize_distributed(config)
    _check(config)
    workdir, e = Path(workdir).expanduser().absolute(), config.eval
    evaluator = _Evaluator(config, workdir, devices)
    sweep, best = [], None
    if e.sweep:
        if e.mode == "standard":
            raise config_lib.ConfigError("eval.sweep needs a mode with a value to tune "
                                         "(dynamic, fwl_test_time, fwl+dynamic).")
        for value in _sweep_values(e.sweep):
            scores = evaluator.run("validation", value)[1]
            sweep.append({"value": value, "validation_perplexity": scores.perplexity})
        best = min(sweep, key=lambda r: r["validation_perplexity"])["value"]
    split, scores, timing, settings = evaluator.run(e.split, best)
    report = _report(evaluator.config, evaluator.trainer.model.config, split, scores, timing,
                     settings)
    if sweep:
        report["sweep"] = {"swept": "lr" if e.mode in DYNAMIC else "step_size",
                           "results": sweep, "best": best}
    if jax.process_index() == 0:
        _write(evaluator, workdir, split, scores, report)
    return report


def report_name(e: ml_collections.ConfigDict) -> str:
    """The file stem of an evaluation's report and per-token file under `<workdir>/eval/`:
    `eval.name`, or `<split>_<mode>[_<carry>]` (the suffix left out for carry=carry)."""
    return e.name or f"{e.split}_{e.mode}" + ("" if e.carry == "carry" else f"_{e.carry}")


def _write(evaluator, workdir: Path, split, scores, report: dict) -> None:
    e = evaluator.config.eval
    out = workdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    carry = "" if e.carry == "carry" else f"_{e.carry}"
    name = report_name(e)
    frequencies = results.token_frequencies(evaluator.data.split("train").tokens,
                                            evaluator.config.data.vocab_size)
    results.save_tokens(out / f"{name}.npz", scores, split.doc_ids, frequencies)
    standard = out / f"{e.split}_standard{carry}.json"
    if e.mode != "standard" and standard.exists():
        base = json.loads(standard.read_text())
        report["time_vs_standard"] = base["tokens_per_s"] / report["tokens_per_s"]
    results.write_report(out / f"{name}.json", report)


def _score(scorer, params, split, config, split_name: str):
    bar = tqdm(total=None, unit="batch", desc=f"{config.eval.mode} {split_name}",
               disable=jax.process_index() != 0 or not config.log.progress_bar,
               dynamic_ncols=True)

    start = time.perf_counter()

    def progress(step, steps, documents, tokens, nll_sum):
        bar.total = steps
        bar.update(step - bar.n)
        bar.set_postfix(docs=f"{documents}/{split.num_documents}",
                        tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):,.0f}",
                        ppl=f"{math.exp(min(nll_sum / max(tokens, 1), 50.0)):.3f}", refresh=False)
    try:
        return score_split(scorer, params, split, seq_len=config.data.seq_len,
                           batch_size=config.eval.batch_size, progress=progress)
    finally:
        bar.close()


def eval_flops_per_token(model_config, seq_len: int, mode: str, part: str, batch_size: int = 1) -> float:
    """Matmul FLOPs per scored token: one forward, plus for dynamic modes the backward of
    the adapted part (all or body: the whole backward; head: the head's only)."""
    forward = flops_per_token(model_config, seq_len, training=False, batch_size=batch_size)
    if mode not in DYNAMIC:
        return forward
    if part in ("all", "body"):
        return flops_per_token(model_config, seq_len, training=True, batch_size=batch_size)
    body = flop_breakdown(model_config, seq_len, batch_size)["body"]
    return forward + 2.0 * (forward - body)


def _report(config, model_config, split, scores, timing, settings) -> dict:
    e, seq_len = config.eval, config.data.seq_len
    flops = eval_flops_per_token(model_config, seq_len, e.mode, e.dynamic_params, e.batch_size)
    forward = flops_per_token(model_config, seq_len, training=False, batch_size=e.batch_size)
    plain = flops_per_token(dataclasses.replace(model_config, fwl_enabled=False), seq_len,
                            training=False, batch_size=e.batch_size)
    return {"mode": e.mode, "split": e.split, "dataset": config.data.dataset,
            "perplexity": scores.perplexity, "mean_nll": scores.mean_nll,
            "tokens": int(len(scores.nll)), "documents": split.num_documents,
            "seconds": timing.seconds, "tokens_per_s": timing.tokens_per_s,
            "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
            "jax": jax.__version__, "settings": settings, "flops_per_token": flops,
            "flops_vs_standard": flops / forward, "flops_vs_plain_standard": flops / plain}
