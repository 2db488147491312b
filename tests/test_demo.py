"""`make demo`'s body end to end at a tiny size: training, the three evaluations, the
summary and the figures, and a second run that reuses everything."""

import json

import jax

from configs import demo
from fwl_jax.demo import run_demo


def test_demo_tiny(tmp_path):
    import data_fixtures
    data_fixtures.write_text_corpus(tmp_path / "corpus")
    config = demo.get_config()
    config.update_from_flattened_dict({
        "data.dataset": "text_files", "data.source": str(tmp_path / "corpus"),
        "data.data_dir": str(tmp_path / "data"), "data.vocab_size": 400, "data.seq_len": 64,
        "train.num_steps": 4, "checkpoint.every_steps": 4, "log.progress_bar": False,
        "eval.batch_size": 2})
    devices = jax.devices()[:1]
    summary = run_demo(config, tmp_path / "out", devices=devices)
    for row in ("plain", "fwl", "plain_dynamic"):
        assert {"test_perplexity", "eval_tokens_per_s", "cost_vs_standard"} <= set(summary[row])
    assert summary["plain"]["cost_vs_standard"] == 1.0
    assert summary["plain_dynamic"]["settings"]["dynamic"]["lr"] in (3e-2, 1e-1, 3e-1)
    figures = [p for paths in summary["figures"].values() for p in paths]
    assert len(figures) == 6 and all(open(p, "rb").read(4) == b"\x89PNG" for p in figures)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["fwl"]["test_perplexity"] == summary["fwl"]["test_perplexity"]
    report = tmp_path / "out" / "runs" / "fwl" / "eval" / "test_standard_decay.json"
    stamp = report.stat().st_mtime_ns
    again = run_demo(config, tmp_path / "out", devices=devices)  # reuses runs and reports
    assert report.stat().st_mtime_ns == stamp
    assert again["fwl"]["test_perplexity"] == summary["fwl"]["test_perplexity"]
