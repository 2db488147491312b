"""Every causal_linear_attention method against the naive reference: outputs, final states,
gradients; plus the cost model's decisions, bad input and bfloat16."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fwl_jax.ops import linear_attention as la
from fwl_jax.ops.reference import causal_linear_attention_reference

VARIANTS = [("quadratic", "auto"), ("recurrent", "auto"), ("chunked", "associative"), ("chunked", "scan"),
            ("auto", "auto")]

# (segment ids of one row or None, chunk size): single tokens, T not a multiple of the chunk,
# boundaries on and inside chunk edges, padding (id 0) at the end, a one-token segment first.
CASES = {
    "single_token": ([7], 4),
    "no_segments_ragged": (None, 4),
    "edges_on_chunks": ([1] * 4 + [2] * 4 + [3] * 5, 4),
    "edges_inside_chunks": ([1] * 3 + [2] * 6 + [3] * 2 + [0] * 2, 4),
    "one_token_first_segment": ([4] + [5] * 9 + [0] * 3, 5),
    "chunk_of_one": ([1, 1, 2, 2, 2, 3, 3], 1),
    "chunk_longer_than_row": ([1, 1, 1, 2, 2], 16),
}


def _inputs(seed, batch, length, dk, dv, dtype=jnp.float64):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (batch, length, dk), dtype)
    k = jax.random.normal(keys[1], (batch, length, dk), dtype)
    v = jax.random.normal(keys[2], (batch, length, dv), dtype)
    s0 = jax.random.normal(keys[3], (batch, dk, dv), dtype)
    return q, k, v, s0


def _segments(row, batch, length):
    if row is None:
        return None
    second = np.roll(np.asarray(row), 2)  # the other row: different boundaries
    return jnp.asarray(np.stack([row, second][:batch]), jnp.int32)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_reference_outputs_states_and_gradients(x64, case, with_state):
    row, chunk = CASES[case]
    length = 11 if row is None else len(row)
    q, k, v, s0 = _inputs(sorted(CASES).index(case), 2, length, 3, 5)
    seg = _segments(row, 2, length)
    s0 = s0 if with_state else None
    _, _, ct_out, ct_final = _inputs(99, 2, length, 3, 5)
    reference = lambda *a: causal_linear_attention_reference(*a[:3], segment_ids=seg, initial_state=a[3])  # noqa: E731
    (ref_out, ref_final), vjp_ref = jax.vjp(reference, q, k, v, s0)
    ref_grads = vjp_ref((ct_out, ct_final))
    for method, combine in VARIANTS:
        fast = jax.jit(lambda q, k, v, s0: la.causal_linear_attention(
            q, k, v, segment_ids=seg, initial_state=s0, method=method, chunk_size=chunk, chunk_combine=combine))
        (out, final), vjp_fast = jax.vjp(fast, q, k, v, s0)
        np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-10, err_msg=method + combine)
        np.testing.assert_allclose(final, ref_final, rtol=1e-10, atol=1e-10, err_msg=method + combine)
        for got, want in zip(vjp_fast((ct_out, ct_final)), ref_grads):
            if want is not None:
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=method + combine)


def test_chosen_chunk_size_matches_reference(x64):
    """``chunk_size=0``: the chunk the cost model picks (here 256 of a ragged 300-token row
    with segments crossing chunk edges) gives the reference's outputs, states and gradients."""
    length = 300
    q, k, v, s0 = _inputs(5, 2, length, 1, 6)
    seg = _segments(np.repeat([1, 2, 3, 0], [90, 140, 50, 20]), 2, length)
    assert la.resolve(2, length, 1, 6, "chunked", 0)[2] == 256
    reference = lambda *a: causal_linear_attention_reference(*a[:3], segment_ids=seg, initial_state=a[3])  # noqa: E731
    (ref_out, ref_final), vjp_ref = jax.vjp(reference, q, k, v, s0)
    _, _, ct_out, ct_final = _inputs(98, 2, length, 1, 6)
    ref_grads = vjp_ref((ct_out, ct_final))
    for method, combine in (("chunked", "associative"), ("chunked", "scan"), ("auto", "auto")):
        fast = lambda *a: la.causal_linear_attention(*a[:3], segment_ids=seg, initial_state=a[3],  # noqa: B023, E731
                                                     method=method, chunk_size=0, chunk_combine=combine)
        (out, final), vjp_fast = jax.vjp(fast, q, k, v, s0)
        np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-10, err_msg=method + combine)
        np.testing.assert_allclose(final, ref_final, rtol=1e-10, atol=1e-10, err_msg=method + combine)
        for got, want in zip(vjp_fast((ct_out, ct_final)), ref_grads):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=method + combine)


def test_reference_semantics_by_hand(x64):
    """The reference itself, on a case small enough to write out: dk = dv = 1, all ones."""
    ones = jnp.ones((1, 5, 1), jnp.float64)
    seg = jnp.asarray([[1, 1, 2, 2, 2]])
    s0 = jnp.full((1, 1, 1), 10.0, jnp.float64)
    out, final = causal_linear_attention_reference(ones, ones, ones, segment_ids=seg, initial_state=s0)
    np.testing.assert_array_equal(out[0, :, 0], [10, 11, 0, 1, 2])  # state only in the first segment
    np.testing.assert_array_equal(final[0], [[3]])  # last segment's three tokens
    out, final = la.causal_linear_attention(ones, ones, ones, initial_state=s0, method="chunked", chunk_size=2)
    np.testing.assert_array_equal(out[0, :, 0], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(final[0], [[15]])


def test_segment_ids_label_contiguous_runs(x64):
    """An id that returns after another one starts a new segment."""
    q, k, v, _ = _inputs(3, 1, 6, 2, 2)
    seg = jnp.asarray([[1, 1, 2, 2, 1, 1]])
    relabelled = jnp.asarray([[1, 1, 2, 2, 3, 3]])
    for method in ("quadratic", "chunked", "recurrent"):
        a, _ = la.causal_linear_attention(q, k, v, segment_ids=seg, method=method, chunk_size=4)
        b, _ = la.causal_linear_attention(q, k, v, segment_ids=relabelled, method=method, chunk_size=4)
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_jit_and_vmap(x64):
    q, k, v, s0 = _inputs(4, 2, 9, 3, 4)
    fn = jax.jit(la.causal_linear_attention, static_argnames=("method", "chunk_size", "chunk_combine"))
    out, final = fn(q, k, v, initial_state=s0, method="chunked", chunk_size=4)
    per_row = jax.vmap(lambda q, k, v, s: la.causal_linear_attention(
        q[None], k[None], v[None], initial_state=s[None], method="quadratic"))(q, k, v, s0)
    np.testing.assert_allclose(out, per_row[0][:, 0], rtol=1e-12)
    np.testing.assert_allclose(final, per_row[1][:, 0], rtol=1e-12)


def test_bfloat16_inputs_accumulate_in_float32():
    q, k, v, s0 = _inputs(5, 2, 70, 16, 24, jnp.float32)
    seg = jnp.asarray(np.repeat([[1, 2, 3, 4, 5]], 2, axis=0).repeat(14, axis=1), jnp.int32)
    ref_out, ref_final = la.causal_linear_attention(q, k, v, segment_ids=seg, initial_state=s0, method="quadratic")
    for method, combine in VARIANTS:
        bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
        out, final = la.causal_linear_attention(*bf, segment_ids=seg, initial_state=s0, method=method,
                                                chunk_size=8, chunk_combine=combine)
        assert out.dtype == jnp.float32 and final.dtype == jnp.float32
        # Only the inputs are rounded (relative 2^-8 each); sums of ~14 terms of unit products.
        scale = float(jnp.abs(ref_out).max())
        assert float(jnp.abs(out - ref_out).max()) < 2e-2 * scale
        assert float(jnp.abs(final - ref_final).max()) < 2e-2 * float(jnp.abs(ref_final).max())


@pytest.mark.parametrize("method,combine", VARIANTS[:4])
def test_bfloat16_mixed_precision_outputs_and_gradients(method, combine):
    """bfloat16 inputs: with mixed_precision=False only the inputs are rounded (outputs and
    gradients match float32 on the rounded inputs closely); with True the second products and
    the backward's cotangents are rounded too, which stays within bfloat16 accuracy."""
    q, k, v, s0 = _inputs(6, 2, 37, 16, 24, jnp.float32)
    seg = _segments([1] * 9 + [2] * 20 + [3] * 8, 2, 37)
    bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    probe_out, probe_final = _inputs(7, 2, 37, 16, 24, jnp.float32)[2:]

    def value_and_grads(q, k, v, s0, **kw):
        def loss(q, k, v, s0):
            out, final = la.causal_linear_attention(q, k, v, segment_ids=seg, initial_state=s0,
                                                    method=method, chunk_size=8, chunk_combine=combine, **kw)
            return jnp.sum(out * probe_out) + jnp.sum(final * probe_final), (out, final)
        (_, outs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, s0)
        return [*outs, *(g.astype(jnp.float32) for g in grads)]

    want = value_and_grads(*[x.astype(jnp.float32) for x in bf], s0)
    exact = value_and_grads(*bf, s0, mixed_precision=False)
    mixed = value_and_grads(*bf, s0, mixed_precision=True)
    names = ["out", "final", "g_q", "g_k", "g_v", "g_s0"]
    errors = {}
    for name, w, e, m in zip(names, want, exact, mixed):
        scale = float(jnp.abs(w).max())
        tol_exact = 1e-5 if name in ("out", "final", "g_s0") else 1e-2  # bf16 gradients of bf16 inputs
        assert float(jnp.abs(e - w).max()) < tol_exact * scale, name
        errors[name] = float(jnp.abs(m - w).max()) / scale
        assert errors[name] < 2e-2, name
    assert errors["out"] > 1e-5  # the second products really are rounded


def _dot_operand_dtypes(fn, *args):
    """The operand element types of every dot_general in ``fn``'s lowered program."""
    text = jax.jit(fn).lower(*args).as_text()
    return [tuple(re.findall(r"x(bf16|f16|f32|f64)>", line.split(" : (")[1].split(") ->")[0]))
            for line in text.splitlines() if "stablehlo.dot_general" in line]


@pytest.mark.parametrize("method", ["quadratic", "chunked", "recurrent"])
def test_mixed_precision_runs_every_matmul_in_bfloat16(method):
    """Forward and backward: with mixed precision every matmul takes bfloat16 operands; without
    it the second products and the backward's matmuls take float32 ones."""
    q, k, v, s0 = (x.astype(jnp.bfloat16) for x in _inputs(8, 2, 20, 8, 12, jnp.float32))
    seg = _segments([1] * 7 + [2] * 13, 2, 20)

    def loss(q, k, v, s0, mixed):
        out, final = la.causal_linear_attention(q, k, v, segment_ids=seg, initial_state=s0.astype(jnp.float32),
                                                method=method, chunk_size=8, mixed_precision=mixed)
        return out.sum() + final.sum()

    for mixed in (True, False):
        dtypes = _dot_operand_dtypes(jax.grad(lambda *a: loss(*a, mixed), argnums=(0, 1, 2, 3)), q, k, v, s0)
        assert len(dtypes) >= 4 and all(len(d) == 2 for d in dtypes)
        if mixed:
            assert all(d == ("bf16", "bf16") for d in dtypes), dtypes
        else:
            assert sum("f32" in d for d in dtypes) >= 2, dtypes


def test_mixed_precision_keeps_forward_mode_and_float16():
    q, k, v, _ = (x.astype(jnp.bfloat16) for x in _inputs(9, 1, 12, 4, 6, jnp.float32))
    fn = lambda q: la.causal_linear_attention(q, k, v, method="quadratic")[0]  # noqa: E731
    out, tangent = jax.jvp(fn, (q,), (jnp.ones_like(q),))
    want = jax.jvp(lambda q: la.causal_linear_attention(q, k, v, method="quadratic", mixed_precision=False)[0],
                   (q,), (jnp.ones_like(q),))
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(want[1]), rtol=2e-2, atol=2e-2)
    # float16: scores beyond float16's range stay finite (float32 operands whatever the flag).
    big = jnp.full((1, 4, 768), 12.0, jnp.float16)
    out, _ = la.causal_linear_attention(big, big, big[..., :2], method="quadratic")
    assert bool(jnp.isfinite(out).all())


def test_cost_model_decisions():
    choose = la.choose_method
    # Short sequences: the masked quadratic form is cheapest (T below 2 Dk Dv / (Dk + Dv)).
    assert choose(16, 1024, 768, 3072)[0] == "quadratic"
    assert choose(16, 1024, 768, 3072, 64)[0] == "quadratic"
    assert choose(4, 1, 64, 64)[0] == "quadratic"
    # Long sequences with small heads: chunked, all chunk states in parallel.
    assert choose(4, 8192, 64, 64, 64) == ("chunked", "associative", 64)
    assert choose(4, 8192, 64, 64)[:2] == ("chunked", "associative")
    # Prefix sums (unit keys): chunked whatever the length.
    assert choose(16, 1024, 1, 3072, 64)[0] == "chunked"
    # Long windows of large states: large chunks (few states, large matmuls) beat the
    # quadratic form, measured 2.4x at chunks of 512 and 2.5x at 1,024 on an H200.
    method, combine, chunk = choose(2, 8192, 768, 3072)
    assert (method, combine) == ("chunked", "associative") and chunk >= 512
    # ... and when N states at a given chunk do not fit, the sequential chunk scan does.
    assert choose(16, 8192, 768, 3072, 64) == ("chunked", "scan", 64)
    # The token-by-token scan never wins beyond a single token.
    for t in (2, 64, 4096):
        assert choose(2, t, 32, 32, 16)[0] != "recurrent"
        assert choose(2, t, 32, 32)[0] != "recurrent"
    # Small problems are latency-bound: one quadratic kernel beats log N scan levels.
    assert choose(1, 512, 128, 128)[0] == "quadratic"
    assert choose(16, 256, 128, 128)[0] == "quadratic"
    assert choose(16, 4096, 128, 128)[0] == "chunked"


def test_auto_chunk_sizes():
    assert la.chunk_sizes(8192) == la.CHUNK_SIZES
    assert la.chunk_sizes(100) == (32, 64)
    assert la.chunk_sizes(8) == (32,)  # one padded chunk
    assert la.chunk_sizes(8192, 48) == (48,)
    assert la.resolve(2, 100, 4, 4, "quadratic", 0) == ("quadratic", "auto", 0)
    method, combine, chunk = la.resolve(2, 8192, 768, 3072, "chunked", 0, "scan")
    assert (method, combine) == ("chunked", "scan") and chunk in la.CHUNK_SIZES
    assert la.resolve(2, 100, 4, 4, "chunked", 16, "associative") == ("chunked", "associative", 16)


RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _measured_times(runs):
    """{shape: {(method, combine, chunk): forward + backward ms}} from bench/linear_attention.py
    JSON files; ``runs`` pairs each file with the chunk size of its unnamed chunked rows."""
    times = {}
    for path, chunk in runs:
        for entry in json.loads((RESULTS / path).read_text())["shapes"]:
            for name, row in entry["methods"].items():
                parts = name.split("/")
                method, combine = parts[0], (parts[1:] or ["associative"])[0]
                key = (method, combine, int(parts[2]) if len(parts) > 2 else chunk if method == "chunked" else 0)
                times.setdefault(tuple(entry["shape"]), {})[key] = row["train_ms"]
    return times


# H200 runs: all chunk sizes in one run (session 5), one run per chunk size (64 in session 4,
# 128 to 512 in session 5, before the model was refitted), both with float32 second products
# (now mixed_precision=False); and the three large shapes with mixed precision (session 6).
# Each: (files, shapes, rows timed).
MEASURED = {"sweep": ([("bench_2026-11-27_s5/final_linear_attention.json", None)], 5, 5 * 12),
            "per_chunk": ([("bench_2026-11-27_s4/linear_attention.json", 64)]
                          + [(f"bench_2026-11-27_s5/la_{c}.json", c) for c in (128, 256, 512)], 5, 35),
            "mixed": ([("bench_2026-11-27_s6/la_mixed.json", None)], 3, 3 * 5),
            "mixed_off": ([("bench_2026-11-27_s6/la_float32.json", None)], 3, 3 * 5)}


@pytest.mark.parametrize("run", sorted(MEASURED))
def test_cost_model_ranks_measured_times(run):
    """Among the options timed on a GPU, the one the cost model ranks first is within 10% of
    the fastest at every shape: overall (``method="auto"``), among the chunked options
    (``method="chunked"``) and between the two combines at each chunk size (a given
    ``chunk_size``)."""
    files, shapes, count = MEASURED[run]
    times = _measured_times(files)
    assert len(times) == shapes and sum(map(len, times.values())) >= count - shapes  # skipped: out of memory
    for (b, t, dk, dv), rows in times.items():
        seconds = {o: la.estimate_cost(o[0], b, t, dk, dv, o[2] or 1, o[1]).seconds for o in rows}
        chunked = [o for o in rows if o[0] == "chunked"]
        groups = [list(rows), chunked] + [[o for o in chunked if o[2] == c] for c in {o[2] for o in chunked}]
        for group in groups:
            pick = min(group, key=seconds.get)
            fastest = min(rows[o] for o in group)
            assert rows[pick] <= 1.10 * fastest, ((b, t, dk, dv), pick, {o: rows[o] for o in group})


def test_auto_picks_what_the_sweep_found_fastest():
    """At the two long shapes of the sweep, ``auto`` (chunk size 0) picks the fastest option."""
    times = _measured_times(MEASURED["sweep"][0])
    for shape in ((2, 8192, 768, 3072), (16, 4096, 64, 64)):
        rows = times[shape]
        method, combine, chunk = la.choose_method(*shape)
        assert rows[(method, combine, chunk)] == min(rows.values()), (shape, (method, combine, chunk))


@pytest.mark.parametrize("kwargs,match", [
    (dict(q=jnp.ones((2, 5))), "q must have shape"),
    (dict(k=jnp.ones((2, 5, 4))), "k must have the shape of q"),
    (dict(v=jnp.ones((2, 4, 3))), "v must have shape"),
    (dict(q=jnp.ones((2, 5, 3), jnp.int32)), "q must be a floating-point"),
    (dict(segment_ids=jnp.ones((2, 4), jnp.int32)), "segment_ids must have shape"),
    (dict(segment_ids=jnp.ones((2, 5))), "segment_ids must be an integer"),
    (dict(initial_state=jnp.ones((2, 3, 3))), "initial_state must have shape"),
    (dict(method="flash"), "method must be one of"),
    (dict(chunk_size=-1), "chunk_size must be an int >= 0"),
    (dict(chunk_combine="tree"), "chunk_combine must be one of"),
    (dict(mixed_precision="yes"), "mixed_precision must be True or False"),
])
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(q=jnp.ones((2, 5, 3)), k=jnp.ones((2, 5, 3)), v=jnp.ones((2, 5, 4)))
    args.update(kwargs)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(ValueError, match=match):
        la.causal_linear_attention(q, k, v, **args)
