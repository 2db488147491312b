"""`evaluate_run(config, workdir)`: the evaluation program's body (eval.py calls it).

Loads the checkpoint, scores the split in the chosen mode, and writes
`workdir/eval/<split>_<mode>.json` (report) and `.npz` (per-token results).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from fwl_jax.data import prepare_dataset
from fwl_jax.models import TransformerLM, flops_per_token, make_mesh
from fwl_jax.ops.fwl import FAST_TENSORS, inverse_softplus
from fwl_jax.eval import results
from fwl_jax.eval.scoring import CARRY_POLICIES, WindowScorer, score_split
from fwl_jax.train import config as config_lib
from fwl_jax.train.checkpoint import restore_params
from fwl_jax.train.loop import maybe_initialize_distributed
from fwl_jax.train.step import Trainer

MODES = ("standard", "fwl_test_time")


def _check(config) -> None:
    e = config.eval
    if e.mode not in MODES:
        raise config_lib.ConfigError(f"eval.mode must be one of {', '.join(MODES)}, got "
                                     f"{e.mode!r}{config_lib.suggest(e.mode, MODES)}.")
    if e.carry not in CARRY_POLICIES:
        raise config_lib.ConfigError(f"eval.carry must be one of {', '.join(CARRY_POLICIES)}, "
                                     f"got {e.carry!r}.")


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


def evaluate_run(config: ml_collections.ConfigDict, workdir: str | Path, *,
                 devices=None) -> dict:
    """Scores `config.eval.split` with the run's checkpoint; returns the report."""
    maybe_initialize_distributed(config)
    _check(config)
    workdir = Path(workdir).expanduser().absolute()
    mode, e = config.eval.mode, config.eval
    if mode == "fwl_test_time":
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.model.fwl_enabled = True
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    data = prepare_dataset(config.data.dataset, config.data.data_dir,
                           vocab_size=config.data.vocab_size, seed=config.data.seed,
                           process_index=jax.process_index(),
                           process_count=jax.process_count(),
                           **config_lib.builder_options(config.data))
    trainer = Trainer(config, mesh)
    with trainer.context():
        params = restore_params(workdir, trainer.abstract_state().params,
                                step=e.checkpoint_step or None)
        settings = {"carry": e.carry, "carry_decay": e.carry_decay, "batch_size": e.batch_size,
                    "checkpoint_step": e.checkpoint_step or "latest",
                    "seq_len": config.data.seq_len, "fwl_enabled": config.model.fwl_enabled}
        if mode == "fwl_test_time":
            sizes = parse_step_sizes(e.step_sizes)
            params, settings["step_sizes"] = with_step_sizes(params, sizes), sizes
        split = data.split(e.split).head(e.max_documents)
        scores, seconds = _score(trainer.model, mesh, params, split, config)
    report = _report(config, trainer.model.config, split, scores, seconds, mode, settings)
    if jax.process_index() == 0:
        out = workdir / "eval"
        out.mkdir(parents=True, exist_ok=True)
        name = f"{e.split}_{mode}" + ("" if e.carry == "carry" else f"_{e.carry}")
        frequencies = results.token_frequencies(data.split("train").tokens,
                                                config.data.vocab_size)
        results.save_tokens(out / f"{name}.npz", scores, split.doc_ids, frequencies)
        standard = out / f"{e.split}_standard.json"
        if mode != "standard" and standard.exists():
            base = json.loads(standard.read_text())
            report["time_vs_standard"] = base["tokens_per_s"] / report["tokens_per_s"]
        results.write_report(out / f"{name}.json", report)
    return report


def _score(model: TransformerLM, mesh, params, split, config):
    bar = tqdm(total=None, unit="batch", disable=jax.process_index() != 0 or
               not config.log.progress_bar, dynamic_ncols=True)

    def progress(step, steps, tokens, nll_sum):
        bar.total = steps
        bar.update(step - bar.n)
        bar.set_postfix(tokens=tokens, ppl=f"{math.exp(nll_sum / max(tokens, 1)):.3f}",
                        refresh=False)
    try:
        return score_split(WindowScorer(model, mesh), params, split,
                           seq_len=config.data.seq_len, batch_size=config.eval.batch_size,
                           carry=config.eval.carry, carry_decay=config.eval.carry_decay,
                           progress=progress)
    finally:
        bar.close()


def _report(config, model_config, split, scores, seconds, mode, settings) -> dict:
    seq_len = config.data.seq_len
    flops = flops_per_token(model_config, seq_len, training=False)
    plain = flops_per_token(dataclasses.replace(model_config, fwl_enabled=False), seq_len,
                            training=False)
    tokens = int(len(scores.nll))
    return {"mode": mode, "split": config.eval.split, "dataset": config.data.dataset,
            "perplexity": scores.perplexity, "mean_nll": scores.mean_nll, "tokens": tokens,
            "documents": split.num_documents, "seconds": seconds,
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
            "jax": jax.__version__, "settings": settings,
            "flops_per_token": flops, "flops_vs_plain_standard": flops / plain}
