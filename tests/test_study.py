"""study.py's library end to end at a tiny size: two runs, every row they allow, the carry
study, the figures and the Markdown table; a second call reuses everything."""

import json

import jax

from configs import tiny
from fwl_jax.study import markdown_table, run_study


def test_study_tiny(tmp_path):
    import data_fixtures
    data_fixtures.write_text_corpus(tmp_path / "corpus")
    config = tiny.get_config()
    config.update_from_flattened_dict({
        "data.dataset": "text_files", "data.source": str(tmp_path / "corpus"),
        "data.data_dir": str(tmp_path / "data"), "data.vocab_size": 400, "data.seq_len": 32,
        "train.num_steps": 3, "checkpoint.every_steps": 3, "eval.every_steps": 0,
        "log.progress_bar": False, "eval.batch_size": 2, "eval.ms_batches": 2,
        "study.sgd_sweep": "1e-2,1e-1", "study.rms_sweep": "1e-4", "study.step_size_sweep": "1e-2"})
    devices = jax.devices()[:1]
    summary = run_study(config, tmp_path / "out", runs=["plain", "fwl"], devices=devices)
    assert set(summary["rows"]) == {"plain", "plain + dynamic SGD", "plain + dynamic RMS",
                                    "plain + FWL at test time", "FWL", "FWL + dynamic SGD"}
    rows = summary["rows"]
    assert rows["plain"]["time_vs_plain_standard"] == 1.0
    assert rows["plain + dynamic SGD"]["sweep"]["best"] in (1e-2, 1e-1)
    assert rows["plain + dynamic RMS"]["settings"]["dynamic"]["rule"] == "rms"
    assert rows["plain + dynamic SGD"]["test_perplexity"] != rows["plain + dynamic RMS"]["test_perplexity"]
    assert summary["runs"]["plain"]["train_step_time_vs_plain"] == 1.0
    carry = summary["carry"]["fwl"]
    assert set(carry) == {"carry", "reset", "decay 0.3", "decay 0.5", "decay 0.8"}
    assert len({carry[p]["validation"] for p in carry}) == 5  # each policy scored, none reused
    assert carry["decay 0.5"]["test"] == rows["FWL"]["test_perplexity"]  # the default policy
    figures = [p for paths in summary["figures"].values() for p in paths]
    assert len(figures) == 6 and all(open(p, "rb").read(4) == b"\x89PNG" for p in figures)
    table = markdown_table(summary)
    assert table.count("\n") == 1 + len(rows) and "| FWL + dynamic SGD |" in table
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    report = tmp_path / "out" / "runs" / "plain" / "eval" / "test_dynamic_rms.json"
    stamp = report.stat().st_mtime_ns
    again = run_study(config, tmp_path / "out", runs=["plain", "fwl"], devices=devices)
    assert report.stat().st_mtime_ns == stamp
    assert again["rows"]["FWL"]["test_perplexity"] == saved["rows"]["FWL"]["test_perplexity"]
