"""Body attention with packed segments: the cuDNN packed layout against a loop, and (on a GPU)
every implementation against XLA's masked attention, outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fwl_jax.models.attention import cached_attention, causal_attention, segment_layout


def _runs(row):
    """[(start, length)] of the runs of equal ids, by a plain loop."""
    runs = []
    for t, value in enumerate(row):
        if t == 0 or value != row[t - 1]:
            runs.append([t, 0])
        runs[-1][1] += 1
    return runs


@pytest.mark.parametrize("max_segments", [1, 3, 4, 8])
def test_segment_layout_matches_a_loop(max_segments):
    ids = np.array([[1, 1, 1, 2, 2, 3, 3, 3, 3, 0],
                    [5, 5, 5, 5, 5, 5, 5, 5, 5, 5],
                    [1, 2, 1, 1, 3, 3, 3, 3, 4, 4]], np.int32)  # a repeated id after another is a new run
    lengths, offsets, fits = segment_layout(jnp.asarray(ids), max_segments)
    runs = [_runs(row) for row in ids]
    assert bool(fits) == all(len(r) <= max_segments for r in runs)
    for b, row_runs in enumerate(runs):
        want_len = [n for _, n in row_runs][:max_segments]
        want_off = [s for s, _ in row_runs][: max_segments + 1]
        assert list(np.asarray(lengths[b])) == want_len + [-1] * (max_segments - len(want_len))
        assert list(np.asarray(offsets[b])) == want_off + [-1] * (max_segments + 1 - len(want_off))


def test_unknown_implementation():
    q = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="attention implementation"):
        causal_attention(q, q, q, None, "flash")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
@pytest.mark.parametrize("impl", ["cudnn", "cudnn_packed"])
@pytest.mark.parametrize("max_segments", [2, 8])
def test_cudnn_matches_xla_on_gpu(impl, max_segments):
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (2, 256, 4, 64), jnp.bfloat16)
    k = jax.random.normal(keys[1], (2, 256, 2, 64), jnp.bfloat16)
    v = jax.random.normal(keys[2], (2, 256, 2, 64), jnp.bfloat16)
    ids = jnp.asarray(np.repeat(np.array([[1, 2, 3, 4], [7, 7, 8, 9]]), 64, axis=1), jnp.int32)
    probe = jax.random.normal(keys[3], q.shape, jnp.float32)

    def loss(impl):
        def fn(q, k, v):
            out = causal_attention(q, k, v, ids, impl, max_segments=max_segments)
            return jnp.sum(out.astype(jnp.float32) * probe), out
        return jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(q, k, v)

    (_, out), grads = loss(impl)
    (_, want), want_grads = loss("xla")
    for a, b in zip(jax.tree.leaves((out, grads)), jax.tree.leaves((want, want_grads))):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=0.06, rtol=0.05)


def _cache_case(lanes=3, length=64, slots=256, start=96):
    """Queries of a segment at positions start.. over a cache of `slots` slots (later slots
    hold garbage: they are not filled yet), per lane; the mask as the decode path builds it."""
    keys = jax.random.split(jax.random.key(1), 4)
    q = jax.random.normal(keys[0], (lanes, 1, length, 4, 64), jnp.bfloat16)
    k = jax.random.normal(keys[1], (lanes, 1, slots, 2, 64), jnp.bfloat16)
    v = jax.random.normal(keys[2], (lanes, 1, slots, 2, 64), jnp.bfloat16)
    positions = start + jnp.arange(length)
    mask = (jnp.arange(slots)[None, :] <= positions[:, None])[None, None]  # [1, 1, T, L]
    probe = jax.random.normal(keys[3], q.shape, jnp.float32)
    return q, k, v, mask, start + length, probe


def _cached_loss(impl, filled_used, case):
    q, k, v, mask, filled, probe = case

    def fn(q, k, v):  # vmapped over lanes as dynamic evaluation runs it; filled is the same for all
        out = jax.vmap(lambda q, k, v: cached_attention(q, k, v, mask, filled if filled_used else None, impl))(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * probe), out
    return jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(q, k, v)


def test_cached_attention_xla_is_attention_over_the_filled_slots():
    q, k, v, mask, filled, probe = case = _cache_case(slots=192, start=32)
    (_, out), _ = _cached_loss("xla", True, case)
    want = jax.nn.dot_product_attention(q[:, 0], k[:, 0, :filled], v[:, 0, :filled],
                                        mask=mask[:, :, :, :filled], implementation="xla")
    np.testing.assert_allclose(np.asarray(out[:, 0], np.float32), np.asarray(want, np.float32), atol=1e-2)
    with pytest.raises(ValueError, match="xla or cudnn"):
        cached_attention(q[0], k[0], v[0], mask, filled, "cudnn_packed")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
@pytest.mark.parametrize("filled_used", [False, True])
@pytest.mark.parametrize("start", [0, 96])
def test_cached_attention_cudnn_matches_xla_on_gpu(filled_used, start):
    case = _cache_case(start=start)
    (_, out), grads = _cached_loss("cudnn", filled_used, case)
    (_, want), want_grads = _cached_loss("xla", filled_used, case)
    for a, b in zip(jax.tree.leaves((out, grads)), jax.tree.leaves((want, want_grads))):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=0.06, rtol=0.05)
