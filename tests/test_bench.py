"""The benchmark scripts run end to end at tiny sizes (no timing is asserted)."""

import importlib.util
import pathlib

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_look_tiny():
    report = _load("first_look").main(tiny=True)
    assert set(report) >= {"plain", "fwl_full", "fwl_first_order", "plain_segments", "attention_max_abs_diff"}
    for diffs in report["attention_max_abs_diff"].values():
        assert max(diffs) < 1e-3
    for name in ("plain", "fwl_full", "fwl_first_order", "plain_segments"):
        assert report[name]["step_ms"] > 0 and report[name]["temp_gib"] >= 0


def test_data_pipeline_tiny(tmp_path):
    import data_fixtures
    data_fixtures.write_text_corpus(tmp_path / "corpus")
    report = _load("data_pipeline").main([
        f"--data_dir={tmp_path}/data", "--dataset=text_files", f"--source={tmp_path}/corpus",
        "--vocab_size=400", "--seq_len=32", "--batch_size=2", "--batches=3",
        f"--json={tmp_path}/out.json"])
    assert report["train_tokens_per_s"] > 0 and report["eval_tokens_per_s"] > 0
    assert (tmp_path / "out.json").exists()
