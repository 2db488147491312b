"""The benchmark scripts run end to end at tiny sizes (no timing is asserted)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

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


def test_step_tiny(tmp_path):
    report = _load("step").main(["step.py", "--config=configs/tiny.py", "--steps=1", "--repeats=2",
                                 "--warmup=1", "--profile=3", f"--json={tmp_path}/step.json"])
    rows = report["rows"]
    assert set(rows) == {"plain", "fwl_full", "fwl_first_order"} and report["repeats"] == 2
    assert rows["plain"]["time_vs_plain"] == 1.0 and rows["plain"]["flops_vs_plain"] == 1.0
    assert rows["fwl_full"]["flops_vs_plain"] > rows["fwl_first_order"]["flops_vs_plain"] > 1.0
    # the FWL adds relatively more to the head alone than to the whole step
    assert rows["fwl_full"]["head_flops_vs_plain"] > rows["fwl_full"]["flops_vs_plain"]
    for row in rows.values():
        assert row["train_ms"] > 0 and row["head_ms"] > 0 and row["temp_gib"] > 0
        assert row["time_vs_plain"] == row["train_ms"] / rows["plain"]["train_ms"]
        assert min(row["train_spread"], row["eval_spread"], row["head_spread"]) >= 0
        # the spread is that of the means recorded, one per repeat
        means = row["train_means_ms"]
        assert len(means) == 2 and len(row["head_means_ms"]) == 2 and len(row["eval_means_ms"]) == 2
        assert row["train_spread"] == pytest.approx((max(means) - min(means)) / row["train_ms"])
        assert row["train_gpu"] == []  # no nvidia-smi on the CPU
        assert 0 < len(row["train_profile"]["ops"]) <= 3
        # the traced ops are the compiled step's: their scopes are found (module paths summed)
        assert 0 < len(row["train_profile"]["by_scope"]) <= 3
        assert any(g["scope"] != "(no scope)" for g in row["train_profile"]["by_scope"])
    assert (tmp_path / "step.json").exists()


def test_repeated_seconds_gives_one_mean_a_repeat():
    from fwl_jax.timing import repeated_seconds
    calls = []
    times = repeated_seconds(lambda: calls.append(1), steps=3, warmup=2, repeats=4)
    assert len(times) == 4 and all(t >= 0 for t in times) and len(calls) == 2 + 4 * 3
    with pytest.raises(ValueError, match="repeats"):
        repeated_seconds(lambda: None, steps=1, repeats=0)
    # `after` runs once after each mean, after that mean's calls
    events = []
    repeated_seconds(lambda: events.append("call"), steps=2, warmup=1, repeats=3, after=lambda: events.append("after"))
    assert events == ["call"] * 3 + ["after"] + (["call"] * 2 + ["after"]) * 2


def test_gpu_state_reads_nvidia_smi_and_is_none_without_it(monkeypatch):
    import subprocess

    from fwl_jax import timing
    asked = []

    def fake_run(args, **kwargs):
        asked.append(args)
        fields = args[2].split("=")[1].split(",")
        if "clocks_throttle_reasons.active" in fields:  # a driver without that field
            return subprocess.CompletedProcess(args, 2, "", "Field is not a valid field to query.")
        return subprocess.CompletedProcess(args, 0, "1755, 2619, 61, 512.30\n", "")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    monkeypatch.setattr(timing.subprocess, "run", fake_run)
    assert timing.gpu_state() == {"clocks.sm": 1755.0, "clocks.mem": 2619.0, "temperature.gpu": 61.0,
                                  "power.draw": 512.3}
    assert asked[0][1] == "--id=3" and len(asked) == 2  # the process's first visible GPU; retried without the field

    def missing(args, **kwargs):
        raise FileNotFoundError("nvidia-smi")
    monkeypatch.setattr(timing.subprocess, "run", missing)
    assert timing.gpu_state() is None


def test_random_batch_packs_documents_as_the_pipeline_does():
    from fwl_jax.timing import random_batch
    batch = random_batch(2, 10, 50, documents=3)
    np.testing.assert_array_equal(batch["segment_ids"][1], [1, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(batch["positions"][1], [0, 1, 2, 3, 0, 1, 2, 0, 1, 2])
    assert batch["inputs"].shape == batch["targets"].shape == batch["weights"].shape == (2, 10)
    assert (random_batch(2, 10, 50, documents=1)["segment_ids"] == 1).all()
    unpacked = random_batch(2, 10, 50, documents=0)
    assert unpacked["segment_ids"] is None
    np.testing.assert_array_equal(unpacked["positions"][0], np.arange(10))
    with pytest.raises(ValueError, match="documents"):
        random_batch(2, 10, 50, documents=11)


@pytest.mark.parametrize("script", ["step", "scaling"])
def test_step_and_scaling_give_the_body_the_segment_ids_asked_for(script, monkeypatch):
    """`--documents=0`: no segment ids reach the body's attention (its unmasked path);
    `--documents=n`: segment ids do (the masked path, as train.py's batches take it)."""
    import fwl_jax.models.transformer as transformer
    seen = []
    real = transformer.causal_attention

    def spy(q, k, v, segment_ids, impl):
        seen.append(segment_ids is None)
        return real(q, k, v, segment_ids, impl)
    monkeypatch.setattr(transformer, "causal_attention", spy)
    extra = ["--variants=plain"] if script == "step" else ["--devices=1", "--layouts=data"]
    for documents, unmasked in ((0, True), (2, False)):
        argv = [f"{script}.py", "--config=configs/tiny.py", "--steps=1", "--warmup=1", f"--documents={documents}",
                *extra]
        monkeypatch.setattr("sys.argv", argv)
        seen.clear()
        report = _load(script).main(argv)
        assert report["documents_per_row"] == documents
        assert (False in seen) != unmasked  # (the parameters' initialisation traces the body without ids)
    argv = [f"{script}.py", "--config=configs/tiny.py", "--documents=-1", *extra]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="--documents must be"):
        _load(script).main(argv)


@pytest.mark.parametrize("precision", [["--dtype=float32"], ["--dtype=bfloat16", "--no-mixed_precision"]])
def test_linear_attention_tiny(precision):
    report = _load("linear_attention").main(["--grid=2,40,8,16", "--steps=1", "--repeats=2",
                                             "--chunk_sizes=8,16,64", "--matmul_size=64", *precision])
    assert report["matmul_tflops"] > 0
    assert report["mixed_precision"] == ("--no-mixed_precision" not in precision)
    (entry,) = report["shapes"]
    # Chunks longer than the sequence are left out; auto's own pick is always timed.
    swept = {"quadratic", "recurrent"} | {f"chunked/{c}/{n}" for c in ("associative", "scan") for n in (8, 16)}
    assert swept <= set(entry["methods"]) <= swept | {entry["auto"]}
    assert entry["auto"] in entry["methods"] and entry["auto_vs_best"] >= 1.0
    assert entry["auto_vs_best"] == (entry["methods"][entry["auto"]]["train_ms"]
                                     / entry["methods"][entry["best"]]["train_ms"])
    assert report["repeats"] == 2 and all(row["train_spread"] >= 0 for row in entry["methods"].values())
    assert all(len(row["train_means_ms"]) == 2 for row in entry["methods"].values())


@pytest.mark.parametrize("method,chunk", [("quadratic", 1), ("chunked", 16)])
def test_linear_attention_times_the_whole_forward_and_backward(method, chunk):
    """The forward + backward it times computes the forward's output too (XLA's count of its
    FLOPs is at least the 3x forward it is divided into; with `jax.grad` alone the output's
    products were dropped: 0.79x and 0.85x of it here)."""
    from fwl_jax.ops.linear_attention import attention_flops
    _, train = _load("linear_attention")._callables(method, "associative", chunk, True)
    args = [jnp.ones((2, 64, d), jnp.float32) for d in (16, 16, 32)]
    analysis = train.lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    counted = attention_flops(method, 2, 64, 16, 32, chunk, initial_state=False, final_state=False)
    assert analysis["flops"] >= 0.95 * 3 * counted


def test_eval_cost_tiny():
    report = _load("eval_cost").main(["eval_cost.py", "--config=configs/tiny.py",
                                      "--documents=2", "--doc_len=150", "--segment_len=32",
                                      "--profile=4"])
    rows = report["rows"]
    for row in rows.values():  # the op profile of each mode, from the same run
        ops = row["profile"]["ops"]
        assert 0 < len(ops) <= 4 and all(o["seconds"] > 0 and o["calls"] > 0 for o in ops)
        assert sum(o["share"] for o in ops) <= 1.0 + 1e-9
        # the window step's compiled text names the traced ops' scopes
        assert any(g["scope"] != "(no scope)" for g in row["profile"]["by_scope"])
    assert rows["standard"]["cost_vs_standard"] == 1.0
    # --doc_len counts scored targets (a document's tokens and its end): 2 x 150 in 2 x 3 windows of 64
    assert rows["standard"]["tokens"] == rows["fwl"]["tokens"] == rows["dynamic"]["tokens"] == 300
    assert report["windows"] == 6 and report["window_fill"] == 300 / (6 * 64)
    assert all(row["tokens_per_s"] == row["tokens"] / row["seconds"] for row in rows.values())
    assert report["fwl_speed_vs_dynamic"] == rows["fwl"]["tokens_per_s"] / rows["dynamic"]["tokens_per_s"]



def test_eval_cost_rows_for_several_merges():
    """`--merge_every=1,2`: one dynamic row each, over the same tokens, the same function (the
    perplexities agree), the FWL's speed ratio taken against the first."""
    report = _load("eval_cost").main(["eval_cost.py", "--config=configs/tiny.py", "--documents=2",
                                      "--doc_len=100", "--segment_len=32", "--merge_every=1,2"])
    rows = report["rows"]
    assert list(rows) == ["standard", "fwl", "dynamic merge_every=1", "dynamic merge_every=2"]
    one, two = rows["dynamic merge_every=1"], rows["dynamic merge_every=2"]
    assert one["tokens"] == two["tokens"] == rows["standard"]["tokens"]
    assert abs(one["perplexity"] - two["perplexity"]) < 1e-3 * one["perplexity"]
    assert report["fwl_speed_vs_dynamic"] == rows["fwl"]["tokens_per_s"] / one["tokens_per_s"]

def test_eval_cost_modes_run_only_their_rows():
    """`--modes=dynamic,standard`: those rows (in the table's order) and their costs against
    standard; no FWL row, so no FWL-against-dynamic ratio; an unknown mode is an error."""
    bench = _load("eval_cost")
    report = bench.main(["eval_cost.py", "--config=configs/tiny.py", "--documents=2", "--doc_len=128",
                         "--segment_len=32", "--modes=dynamic,standard"])
    rows = report["rows"]
    assert report["windows"] == 4 and report["window_fill"] == 1.0  # whole windows: no padding timed
    assert list(rows) == ["standard", "dynamic"] and "fwl_speed_vs_dynamic" not in report
    assert rows["dynamic"]["cost_vs_standard"] == rows["standard"]["tokens_per_s"] / rows["dynamic"]["tokens_per_s"]
    alone = bench.main(["eval_cost.py", "--config=configs/tiny.py", "--documents=2", "--doc_len=100",
                        "--modes=fwl"])["rows"]
    assert list(alone) == ["fwl"] and "cost_vs_standard" not in alone["fwl"]
    with pytest.raises(SystemExit, match="--modes takes a subset of standard,fwl,dynamic; unknown: plain"):
        bench.main(["eval_cost.py", "--config=configs/tiny.py", "--modes=fwl,plain"])
    with pytest.raises(SystemExit, match="got none"):
        bench.main(["eval_cost.py", "--config=configs/tiny.py", "--modes="])
    with pytest.raises(SystemExit, match="--doc_len >= 2"):
        bench.main(["eval_cost.py", "--config=configs/tiny.py", "--doc_len=1"])


@pytest.mark.parametrize("bad, message", [("--segment_len=48", "segment_len 48 must divide seq_len 64"),
                                          ("--merge_every=3", "merge_every 3 must divide the 2 segments")])
def test_eval_cost_checks_dynamic_settings_before_any_row(monkeypatch, bad, message):
    """A segment length or merge_every that dynamic evaluation cannot take ends the run with one
    line before the standard and FWL rows spend their time."""
    bench = _load("eval_cost")
    monkeypatch.setattr(bench, "Trainer", lambda *a, **k: pytest.fail("a row ran before the check"))
    with pytest.raises(SystemExit, match=message):
        bench.main(["eval_cost.py", "--config=configs/tiny.py", "--documents=2", "--doc_len=100",
                    "--segment_len=32", bad])


def test_attention_tiny():
    report = _load("attention").main(["--shape=2,32,2,8", "--segments=1,3", "--impls=xla",
                                      "--dtype=float32", "--steps=1"])
    assert [row["segments"] for row in report["rows"]] == [1, 3]
    for row in report["rows"]:
        assert row["xla_ms"] > 0 and row["xla_max_diff"] == 0.0
    assert report["no_segments_impl"] == "xla" and report["no_segments_ms"] > 0  # cudnn on a GPU


def test_cached_attention_tiny():
    report = _load("attention").main(["--shape=2,32,2,8", "--cache_segment=8", "--dtype=float32", "--steps=1"])
    assert [row["filled"] for row in report["rows"]] == [8, 16, 32]
    for row in report["rows"]:
        assert row["xla_ms"] > 0 and row["xla_max_diff"] == 0.0


def test_scaling_tiny(tmp_path, monkeypatch):
    argv = ["scaling.py", "--config=configs/tiny.py", "--steps=1", "--warmup=1", "--devices=2,64",
            "--layouts=data,fsdp,fsdp_tp2", "--config.log.peak_tflops=1", f"--json={tmp_path}/scaling.json"]
    monkeypatch.setattr("sys.argv", argv)  # ml_collections finds --config.FIELD overrides in sys.argv
    report = _load("scaling").main(argv)
    rows = {(r["layout"], r["devices"]): r for r in report["rows"]}
    assert set(rows) == {("data", 1), ("data", 2), ("fsdp", 1), ("fsdp", 2), ("fsdp_tp2", 2)}
    assert report["skipped_counts"] == [64]  # more than the host has
    assert rows[("data", 1)]["efficiency"] == 1.0
    for r in rows.values():
        assert r["tokens_per_s_per_device"] * r["devices"] == r["tokens_per_s"]
        assert r["efficiency"] == r["tokens_per_s_per_device"] / rows[("data", 1)]["tokens_per_s_per_device"]
        assert r["mfu"] > 0  # against the 1 TFLOP/s peak given
    assert rows[("fsdp_tp2", 2)]["mfu"] / rows[("data", 1)]["mfu"] == pytest.approx(rows[("fsdp_tp2", 2)]["efficiency"])
    # Each row's own memory, whatever ran before it: FSDP over 2 devices keeps about half the
    # parameters and optimizer state of data parallelism on each (the batch shard is the same).
    data, fsdp = rows[("data", 2)], rows[("fsdp", 2)]
    assert 0.4 < fsdp["argument_gib_per_device"] / data["argument_gib_per_device"] < 0.6
    assert all(r["gib_per_device"] > r["argument_gib_per_device"] for r in rows.values())
    assert (tmp_path / "scaling.json").exists()


def test_op_profile_names_each_op_scope_from_the_compiled_text():
    """With the compiled module's text, each traced op gets its JAX scope and the time is
    summed by module path: the forward's and the backward's matmuls land in their module
    paths, and the sums by path add up to the traced total."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from fwl_jax.timing import op_profile

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.sum(nn.Dense(16, name="up")(jnp.tanh(nn.Dense(32, name="down")(x))) ** 2)

    net = Net()
    x = jnp.ones((256, 8))
    params = net.init(jax.random.key(0), x)
    step = jax.jit(jax.grad(lambda p, x: net.apply(p, x)))
    jax.block_until_ready(step(params, x))
    text = step.lower(params, x).compile().as_text()
    profile = op_profile(lambda: step(params, x), top=100, hlo_texts=(text,))
    groups = {g["scope"]: g for g in profile["by_scope"]}
    assert sum(g["seconds"] for g in groups.values()) == pytest.approx(profile["total_s"])
    # the traced ops are the compiled text's (XLA may add a copy without metadata)
    calls = sum(g["calls"] for g in groups.values())
    assert groups.get("(no scope)", {"calls": 0})["calls"] <= calls // 4
    assert {"jvp(Net)/down", "transpose(jvp(Net))/down", "transpose(jvp(Net))/up"} <= set(groups)
    assert any(o.get("scope", "").endswith("transpose(jvp(Net))/down/transpose") for o in profile["ops"])
    without = op_profile(lambda: step(params, x), top=100)
    assert "by_scope" not in without and all("scope" not in o for o in without["ops"])


def test_scope_groups_and_hlo_scopes():
    from fwl_jax.timing import hlo_scopes, scope_group
    assert (scope_group("jit(_train_step)/transpose(jvp(TransformerLM.token_nll))/TransformerLM._body/body/"
                        "layers_11/mlp/up/dot_general")
            == "transpose(jvp(TransformerLM.token_nll))/TransformerLM._body/body/layers_N/mlp/up")
    # merged ops count their first scope; vmap and einsum parts name no module
    assert (scope_group("jit(f)/jvp(M)/head/vmap(BTNH,BSNH->BNTS)/...s,sv->...v/dot_general;jit(f)/other/add")
            == "jvp(M)/head")
    assert scope_group("jit(f)/transpose(jvp(...i,ij->...j))/dot_general") == "transpose(jvp(...i,ij->...j))"
    assert scope_group("jit(_train)/jit(main)/mul") == "(outside modules)"
    assert scope_group(None) == "(no scope)"
    # what a backward recomputes (jax.checkpoint) counts in the backward's module path
    mlp = "TransformerLM._body/body/layers_0/mlp"
    assert (scope_group(f"jit(loss)/transpose(jvp(M))/{mlp}/jvp(M)/{mlp}/checkpoint/rematted_computation/tanh")
            == scope_group(f"jit(loss)/transpose(jvp(M))/{mlp}/checkpoint/add_any")
            == scope_group(f"jit(loss)/transpose(jvp(M))/{mlp}/mul")
            == "transpose(jvp(M))/TransformerLM._body/body/layers_N/mlp")
    assert scope_group("jit(f)/transpose(jvp(M))/head/jvp(M)/head/dot_general") == "transpose(jvp(M))/head"
    assert scope_group(f"jit(f)/transpose(jvp(M))/{mlp}/jvp(M)/{mlp}/up/dot") == "transpose(jvp(M))/" + (
        "TransformerLM._body/body/layers_N/mlp/up")  # a deeper recompute
    # a block remat's forward, recomputed in the backward
    assert (scope_group("jit(f)/transpose(jvp(M))/jvp(M)/checkpoint/rematted_computation/layers_0/mlp/up/dot")
            == scope_group("jit(f)/transpose(jvp(M))/layers_0/mlp/up/dot") == "transpose(jvp(M))/layers_N/mlp/up")
    # a jvp(...) that repeats no path is kept, and a loop's "body" is no module path
    assert scope_group("jit(f)/transpose(jvp(M))/a/jvp(g)/b/mul") == "transpose(jvp(M))/a/jvp(g)/b"
    assert scope_group("jit(f)/while/body/jvp(M.hidden)/body/add") == "while/body/jvp(M.hidden)/body"
    text = ('HloModule jit_f, entry_computation_layout={()->f32[]}\n\nENTRY %main {\n'
            '  %a.1 = f32[2]{0} add(%x, %y), metadata={op_type="add" op_name="jit(f)/M/layers_2/add" stack_frame_id=3}\n'
            '  ROOT %loop_fusion.3 = f32[] fusion(%a.1), kind=kLoop, calls=%c, metadata={op_name="jit(f)/mul"}\n'
            '  %custom-call.7 = f32[2]{0} custom-call(%a.1), metadata={op_name="jit(f)/we\\"ird\\\\/add"}\n'
            '  %b = f32[2]{0} copy(%a.1)\n}\n')
    assert hlo_scopes(text) == {("jit_f", "a.1"): "jit(f)/M/layers_2/add", ("jit_f", "loop_fusion.3"): "jit(f)/mul",
                                ("jit_f", "custom-call.7"): 'jit(f)/we"ird\\/add'}
    with pytest.raises(ValueError, match="HloModule"):
        hlo_scopes("not HLO")


def test_op_profile_sums_kernels_not_their_enclosing_loop():
    """A while loop's event contains its body's kernels: it is left out and they are counted.
    Consecutive kernels that overlap by a little (Hopper may start the next one early) are
    both counted: a containment rule that also dropped overlapping events lost most of a
    dynamic-evaluation trace's time."""
    from fwl_jax.timing import summarize_op_events
    op = lambda name: {"hlo_op": name, "hlo_module": "m"}  # noqa: E731
    line = [(0, 1000, op("while")), (10, 300, op("a")), (320, 100, op("b")),
            (2000, 500, op("c")), (2490, 400, op("d")), (3000, 10, {"name": "not an XLA op"})]
    summary = summarize_op_events([line], top=10)
    assert {o["op"]: round(o["seconds"] * 1e9) for o in summary["ops"]} == {"a": 300, "b": 100, "c": 500, "d": 400}
    assert abs(summary["total_s"] * 1e9 - 1300) < 1e-6


def test_optimizer_tiny(tmp_path):
    module = _load("optimizer")
    report = module.main(["optimizer.py", "--config=configs/tiny.py", "--steps=1", "--warmup=1",
                          f"--json={tmp_path}/optimizer.json"])
    rows = report["rows"]
    assert set(rows) == {"tree", "flat", "one_pass"} and rows["one_pass"]["vs_one_pass"] == 1.0
    assert rows["one_pass"]["traced_vs_one_pass"] == 1.0
    for row in rows.values():
        assert row["ms"] > 0 and row["traced_ms"] > 0 and row["kernel_ops"] > 0
        # the bandwidth column is the floor's bytes over the traced time of the same row
        assert row["gb_per_s"] == pytest.approx(32 * report["parameters"] / (row["traced_ms"] * 1e-3) / 1e9)
    assert rows["tree"]["kernel_ops"] > rows["flat"]["kernel_ops"] > rows["one_pass"]["kernel_ops"]
    assert (tmp_path / "optimizer.json").exists()


def test_optimizer_rows_compile_once_whatever_the_warmup():
    """The rows' first inputs are committed to the device as their outputs are, so the timed
    calls after a single warm-up call do not compile again (the compile would be timed)."""
    import jax
    import jax.numpy as jnp
    module = _load("optimizer")
    compiles = []

    def listener(name, _seconds, **_):
        if name.endswith("backend_compile_duration"):
            compiles.append(name)
    vector = jnp.arange(8.0)  # made before listening: their own compiles are not counted
    # one array committed to the device (as a copy of the parameters is), one not (as jnp.zeros
    # makes it): the calls' outputs are all committed
    carry = (jax.device_put(jnp.zeros(8), jax.devices()[0]), jnp.zeros((), jnp.int32))
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        module._timed(lambda p, n, g: (p - g, n + 1, jnp.sum(g)), carry, vector, steps=2, warmup=1)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(compiles) == 1, compiles  # the update's, once: the timed calls reuse it


def test_optimizer_kernel_ops_counts_inside_command_buffers():
    text = """HloModule m, entry_computation_layout={(f32[10]{0})->(f32[10]{0})}

%fused (p: f32[10]) -> f32[10] {
  %p = f32[10]{0} parameter(0)
  ROOT %neg = f32[10]{0} negate(%p)
}

%command_buffer (p: f32[10]) -> f32[10] {
  %p = f32[10]{0} parameter(0)
  %fusion.1 = f32[10]{0} fusion(%p), kind=kLoop, calls=%fused
  ROOT %fusion.2 = f32[10]{0} fusion(%fusion.1), kind=kLoop, calls=%fused
}

ENTRY %main (a: f32[10]) -> (f32[10]) {
  %a = f32[10]{0} parameter(0)
  %call = f32[10]{0} call(%a), to_apply=%command_buffer
  %bitcast = f32[10]{0} bitcast(%call)
  %custom-call.1 = f32[10]{0} custom-call(%bitcast), custom_call_target="x"
  ROOT %tuple = (f32[10]{0}) tuple(%custom-call.1)
}
"""
    assert _load("optimizer").kernel_ops(text) == 3  # two fusions in the command buffer, one custom call


def test_optimizer_floor_is_optax_adamw_on_one_vector(monkeypatch):
    """The floor row's hand-written update is the arithmetic of optax's clipping and AdamW
    (with decay on every parameter): parameters and both moments, clipped or not."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from fwl_jax.cli import parse_config_flags
    from fwl_jax.train.optim import learning_rate_schedule

    module = _load("optimizer")
    argv = ["x", "--config=configs/tiny.py", "--config.train.grad_clip=0.5", "--config.train.warmup_steps=2"]
    monkeypatch.setattr("sys.argv", argv)  # ml_collections finds --config.FIELD overrides in sys.argv
    train = parse_config_flags(argv).config.train
    schedule = learning_rate_schedule(train)
    tx = optax.chain(optax.clip_by_global_norm(train.grad_clip), optax.adamw(
        schedule, b1=train.b1, b2=train.b2, eps=train.eps, weight_decay=train.weight_decay))
    p = jax.random.normal(jax.random.key(0), (300,))
    state, ours = tx.init(p), (p, jnp.zeros_like(p), jnp.zeros_like(p), jnp.zeros((), jnp.int32))
    want = p
    for i, size in enumerate([1.0, 1.0, 1e-3, 1.0, 1e-3]):  # norms about 17 (clipped) and 0.017 (not)
        g = size * jax.random.normal(jax.random.key(i + 1), (300,))
        updates, state = tx.update(g, state, want)
        before, want = want, optax.apply_updates(want, updates)
        *ours, norm = module._adam_one_pass(train, schedule)(*ours, g)
        np.testing.assert_allclose(norm, jnp.linalg.norm(g), rtol=1e-6)
        np.testing.assert_allclose(ours[0] - before, want - before, rtol=1e-4, atol=1e-9)  # the update
        adam = state[1][0]
        np.testing.assert_allclose(ours[1], adam.mu, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(ours[2], adam.nu, rtol=1e-6, atol=1e-15)
        assert int(ours[3]) == int(adam.count) == i + 1


@pytest.mark.parametrize("name, flags", [("step", "TRAINING_FLAGS"), ("optimizer", "TRAINING_FLAGS"),
                                         ("scaling", "TRAINING_FLAGS"), ("eval_cost", "OVERLAP_FLAGS")])
def test_benchmarks_set_their_programs_xla_flags_before_reading_their_arguments(name, flags, monkeypatch):
    """What a benchmark times is what train.py (or eval.py) runs: its main adds that program's
    XLA flags first (here it stops at the missing --config)."""
    from fwl_jax.train import distributed
    monkeypatch.setattr(distributed, "_backend_started", lambda: False)  # as in a fresh program
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(SystemExit):
        _load(name).main([f"{name}.py"])
    assert os.environ["XLA_FLAGS"].split() == list(getattr(distributed, flags))


@pytest.mark.parametrize("name, flags", [("step", "TRAINING_FLAGS"), ("eval_cost", "OVERLAP_FLAGS")])
def test_benchmark_scripts_start_jax_with_their_programs_xla_flags(name, flags):
    """Run as a script, afresh: nothing the benchmark imports starts JAX's backend, so its
    main's flags reach XLA (had an import started it, add_xla_flags would add nothing)."""
    from fwl_jax.train import distributed
    code = ("import atexit, os, runpy, sys; from jax._src import xla_bridge; "
            "atexit.register(lambda: print(os.environ.get('XLA_FLAGS'), '|', xla_bridge.backends_are_initialized())); "
            f"sys.argv = ['bench/{name}.py']; runpy.run_path('bench/{name}.py', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", code], env={**env, "JAX_PLATFORMS": "cpu"},
                            capture_output=True, text=True, timeout=120, cwd=BENCH.parent)
    assert result.returncode == 1 and "--config=configs/NAME.py is required" in result.stderr, result.stderr[-2000:]
    flags_seen, started = result.stdout.rsplit("|", 1)
    assert flags_seen.split() == list(getattr(distributed, flags))
    assert started.strip() == "False"  # it stopped at the arguments, before starting JAX
