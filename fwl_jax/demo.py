"""`make demo`: train a plain and an FWL model of the same size on Shakespeare, evaluate
both on the held-out plays (and the plain one with dynamic evaluation, its learning rate
tuned on the validation plays), and show where the fast weights help.

Writes `demo_out/summary.json` (one entry per row: plain, fwl, plain_dynamic), the
comparison figures, and keeps the prepared data, runs and reports, so a second run
reuses them (`fresh=True` starts over).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import ml_collections

from fwl_jax.eval import compare, evaluate_run
from fwl_jax.eval.program import report_name
from fwl_jax.train import train_and_evaluate

DYNAMIC_SWEEP = "3e-2,1e-1,3e-1"  # SGD learning rates tried on the validation plays


def variant(config, **fields) -> ml_collections.ConfigDict:
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.update_from_flattened_dict(fields)
    return c


def cached_report(config, workdir: Path, name: str, devices=None) -> dict:
    """The saved report of this evaluation (`config.eval`) of the run in `workdir`, or a new one."""
    e = config.eval
    path = workdir / "eval" / f"{report_name(e)}.json"
    if path.exists():
        return json.loads(path.read_text())
    print(f"evaluating {name} ({e.mode}) on {e.split}", flush=True)
    return evaluate_run(config, workdir, devices=devices)


def run_demo(config: ml_collections.ConfigDict, out_dir: str | Path, *, fresh: bool = False,
             devices=None) -> dict:
    out = Path(out_dir).absolute()
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    plain = variant(config, **{"model.fwl_enabled": False})
    fwl = variant(config, **{"model.fwl_enabled": True})
    runs = {"plain": (plain, out / "runs" / "plain"), "fwl": (fwl, out / "runs" / "fwl")}
    for name, (c, workdir) in runs.items():
        print(f"training {name} ({c.train.num_steps} steps; resumes if already done)")
        train_and_evaluate(c, workdir, devices=devices)
    test = {"eval.split": "test", "eval.mode": "standard"}
    reports = {
        "plain": cached_report(variant(plain, **test), runs["plain"][1], "plain", devices),
        "fwl": cached_report(variant(fwl, **test), runs["fwl"][1], "fwl", devices),
        "plain_dynamic": cached_report(variant(plain, **{**test, "eval.mode": "dynamic",
                                                    "eval.sweep": DYNAMIC_SWEEP}),
                                 runs["plain"][1], "plain", devices),
    }
    base = reports["plain"]["tokens_per_s"]
    summary = {name: {"test_perplexity": r["perplexity"], "eval_tokens_per_s": r["tokens_per_s"],
                      "cost_vs_standard": base / r["tokens_per_s"],
                      "flops_vs_plain_standard": r["flops_vs_plain_standard"],
                      "settings": r["settings"]} for name, r in reports.items()}
    summary["device"] = jax.devices()[0].device_kind

    def tokens(name, mode):
        carry = "" if fwl.eval.carry == "carry" else f"_{fwl.eval.carry}"
        return runs[name][1] / "eval" / f"test_{mode}{carry}.npz"
    figures = {
        "fwl_vs_plain": compare(tokens("plain", "standard"), tokens("fwl", "standard"),
                                out / "fwl_vs_plain", names=("plain", "FWL")),
        "dynamic_vs_plain": compare(tokens("plain", "standard"), tokens("plain", "dynamic"),
                                    out / "dynamic_vs_plain", names=("plain", "dynamic")),
    }
    summary["figures"] = {k: [f["path"] for f in v["figures"].values()] for k, v in figures.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _print(summary)
    return summary


def _print(summary: dict) -> None:
    print(f"\nTest plays (Hamlet, Macbeth, Much Ado), {summary['device']}:")
    print(f"{'model':16s} {'perplexity':>11s} {'eval tokens/s':>14s} {'cost vs standard':>17s}")
    for name in ("plain", "fwl", "plain_dynamic"):
        r = summary[name]
        print(f"{name:16s} {r['test_perplexity']:11.2f} {r['eval_tokens_per_s']:14,.0f} "
              f"{r['cost_vs_standard']:17.2f}")
    print("\nFigures (NLL gain by position, training frequency and repetition):")
    for paths in summary["figures"].values():
        for path in paths:
            print(f"  {path}")
