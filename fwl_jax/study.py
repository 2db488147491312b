"""The results study (docs/RESULTS.md): plain and FWL models trained alike, evaluated in every
mode, with the per-token analyses, a second seed, and the carry-policy study.

Runs (each trained by :func:`fwl_jax.train.train_and_evaluate` under `OUT/runs/NAME`):
`plain`, `fwl`, `fwl_first_order`, `plain_seed1`, `fwl_seed1`, and, when asked for,
`fwl_prefix_mean`. Evaluations (each an :func:`fwl_jax.eval.evaluate_run` report under the
run's `eval/`, tuned on validation where a value is swept, reported on test) are the rows
of `ROWS`. Everything already done is reused, so an interrupted study continues where it
stopped. Writes `OUT/summary.json` (one entry per row, plus the carry study) and the
comparison figures under `OUT/figures/`.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import jax
import ml_collections

from fwl_jax.demo import cached_report, variant
from fwl_jax.eval import compare
from fwl_jax.train import train_and_evaluate

RUNS = {
    "plain": {"model.fwl_enabled": False},
    "fwl": {"model.fwl_enabled": True},
    "fwl_first_order": {"model.fwl_enabled": True, "fwl.meta_gradient": "first_order"},
    "plain_seed1": {"model.fwl_enabled": False, "train.seed": 1},
    "fwl_seed1": {"model.fwl_enabled": True, "train.seed": 1},
    "fwl_prefix_mean": {"model.fwl_enabled": True, "fwl.inner_loss_normalization": "prefix_mean"},
}
OPTIONAL_RUNS = ("fwl_prefix_mean",)

# Row name -> (run, evaluation overrides). Sweeps are tried on validation; the best is used on test.
ROWS = {
    "plain": ("plain", {"eval.mode": "standard"}),
    "plain + dynamic SGD": ("plain", {"eval.mode": "dynamic", "eval.rule": "sgd", "eval.name": "test_dynamic_sgd"}),
    "plain + dynamic RMS": ("plain", {"eval.mode": "dynamic", "eval.rule": "rms", "eval.name": "test_dynamic_rms"}),
    "plain + FWL at test time": ("plain", {"eval.mode": "fwl_test_time"}),
    "FWL": ("fwl", {"eval.mode": "standard"}),
    "FWL + dynamic SGD": ("fwl", {"eval.mode": "fwl+dynamic", "eval.rule": "sgd"}),
    "FWL first order": ("fwl_first_order", {"eval.mode": "standard"}),
    "plain, seed 1": ("plain_seed1", {"eval.mode": "standard"}),
    "FWL, seed 1": ("fwl_seed1", {"eval.mode": "standard"}),
    "FWL prefix_mean": ("fwl_prefix_mean", {"eval.mode": "standard"}),
}
SWEEP_FIELDS = {"dynamic": "sgd_sweep", "fwl+dynamic": "sgd_sweep", "fwl_test_time": "step_size_sweep"}
CARRY_POLICIES = {"carry": {"eval.carry": "carry"}, "reset": {"eval.carry": "reset"},
                  **{f"decay {d}": {"eval.carry": "decay", "eval.carry_decay": d} for d in (0.3, 0.5, 0.8)}}


def _sweep(config, overrides: dict) -> dict:
    mode, s = overrides["eval.mode"], config.study
    if mode == "dynamic" and overrides.get("eval.rule") == "rms":
        return {"eval.sweep": s.rms_sweep, "eval.decay": s.rms_decay}
    return {"eval.sweep": getattr(s, SWEEP_FIELDS[mode])} if mode in SWEEP_FIELDS else {}


def _median_tokens_per_s(workdir: Path) -> float:
    rates = [json.loads(line).get("tokens_per_s") for line in (workdir / "metrics.jsonl").open()]
    rates = [r for r in rates if r]
    return statistics.median(rates[1:] or rates)  # the first window includes compilation


def run_study(config: ml_collections.ConfigDict, out_dir: str | Path, *, runs=None, devices=None) -> dict:
    """Trains the runs, evaluates every row and writes `summary.json` and the figures."""
    out = Path(out_dir).absolute()
    names = list(runs or [n for n in RUNS if n not in OPTIONAL_RUNS])
    test = {"eval.split": "test"}
    summary = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": {}, "runs": {}}
    for name in names:
        c = variant(config, **RUNS[name])
        print(f"training {name} ({c.train.num_steps} steps; resumes if already done)", flush=True)
        train_and_evaluate(c, out / "runs" / name, devices=devices)
        summary["runs"][name] = {"train_tokens_per_s": _median_tokens_per_s(out / "runs" / name)}
    plain_rate = summary["runs"].get("plain", {}).get("train_tokens_per_s")
    for run in summary["runs"].values():
        if plain_rate:
            run["train_step_time_vs_plain"] = plain_rate / run["train_tokens_per_s"]
    for row, (name, overrides) in ROWS.items():
        if name not in names:
            continue
        c = variant(config, **RUNS[name], **test, **overrides, **_sweep(config, overrides))
        summary["rows"][row] = _row(cached_report(c, out / "runs" / name, row, devices), name, summary)
    base = summary["rows"].get("plain")
    for r in summary["rows"].values():
        if base:
            r["time_vs_plain_standard"] = base["eval_tokens_per_s"] / r["eval_tokens_per_s"]
    summary["carry"] = {name: _carry_study(config, name, out / "runs" / name, devices)
                        for name in ("fwl", "fwl_prefix_mean") if name in names}
    summary["figures"] = _figures(config, out, names)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown_table(summary))
    return summary


def _row(report: dict, run: str, summary: dict) -> dict:
    row = {"run": run, "test_perplexity": report["perplexity"], "eval_tokens_per_s": report["tokens_per_s"],
           "flops_vs_plain_standard": report["flops_vs_plain_standard"], "settings": report["settings"],
           **{k: summary["runs"][run][k] for k in ("train_step_time_vs_plain",) if k in summary["runs"][run]}}
    if "sweep" in report:
        row["sweep"] = report["sweep"]
    return row


def _carry_study(config, run: str, workdir: Path, devices) -> dict:
    """An FWL run's standard perplexity on validation and test under each carry policy."""
    study = {}
    for policy, overrides in CARRY_POLICIES.items():
        study[policy] = {}
        for split in ("validation", "test"):
            name = f"{split}_standard_carry_{policy.replace(' ', '')}"
            c = variant(config, **RUNS[run], **overrides,
                        **{"eval.split": split, "eval.mode": "standard", "eval.name": name})
            study[policy][split] = cached_report(c, workdir, f"{run} carry {policy}", devices)["perplexity"]
    return study


def _figures(config, out: Path, names) -> dict:
    e = config.eval
    carry = "" if e.carry == "carry" else f"_{e.carry}"

    def tokens(run, stem):
        return out / "runs" / run / "eval" / f"{stem}.npz"
    pairs = {"fwl_vs_plain": (("plain", f"test_standard{carry}"), ("fwl", f"test_standard{carry}"), ("plain", "FWL")),
             "dynamic_vs_plain": (("plain", f"test_standard{carry}"), ("plain", "test_dynamic_sgd"),
                                  ("plain", "dynamic SGD"))}
    figures = {}
    for key, (a, b, labels) in pairs.items():
        if a[0] in names and b[0] in names:
            result = compare(tokens(*a), tokens(*b), out / "figures" / key, names=labels)
            figures[key] = [f["path"] for f in result["figures"].values()]
    return figures


def markdown_table(summary: dict) -> str:
    """The summary's rows as a Markdown table."""
    lines = ["| model / evaluation | test perplexity | eval tokens/s | eval time x plain | compute x plain "
             "| train step time x plain | tuned |", "|---|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        tuned = ""
        if "sweep" in r:
            tuned = f"{r['sweep']['swept']} {r['sweep']['best']:g}"
        train = r.get("train_step_time_vs_plain")
        lines.append(f"| {name} | {r['test_perplexity']:.2f} | {r['eval_tokens_per_s']:,.0f} | "
                     f"{r.get('time_vs_plain_standard', math.nan):.2f} | {r['flops_vs_plain_standard']:.2f} | "
                     f"{'' if train is None else f'{train:.2f}'} | {tuned} |")
    return "\n".join(lines)


__all__ = ["ROWS", "RUNS", "markdown_table", "run_study"]
