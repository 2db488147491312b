"""Body attention with packed segments: the cuDNN packed layout against a loop, and (on a GPU)
every implementation against XLA's masked attention, outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fwl_jax.models.attention import causal_attention, segment_layout


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
