"""Body attention with packed segments: the cuDNN packed layout against a loop, and (on a GPU)
every implementation against XLA's masked attention, outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fwl_jax.models import attention
from fwl_jax.models.attention import cached_attention, causal_attention, packed_capacities, segment_layout


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


def test_packed_capacities():
    assert packed_capacities(1) == (1,) and packed_capacities(16) == (1, 2, 4, 8, 16)
    assert packed_capacities(6) == (1, 2, 4, 6)
    with pytest.raises(ValueError, match="max_segments"):
        packed_capacities(0)


def _from_layout(q, k, v, lengths, offsets):
    """Causal attention within the runs that cuDNN's packed layout describes, in XLA: a CPU
    stand-in for the packed kernel. A token that no run covers attends only to itself."""
    t = jnp.arange(q.shape[1])
    start = offsets[:, :-1]  # [B, M]
    inside = (t[None, :, None] >= start[:, None, :]) & (t[None, :, None] < (start + lengths)[:, None, :])
    run = jnp.where(inside.any(-1), jnp.argmax(inside, axis=-1), -1 - t[None, :])  # [B, T]
    return jax.nn.dot_product_attention(q, k, v, mask=(run[:, :, None] == run[:, None, :])[:, None],
                                        is_causal=True, implementation="xla")


@pytest.mark.parametrize("runs, want", [(1, 1), (2, 2), (3, 4), (8, 8), (9, "masked")])
def test_cudnn_packed_runs_the_smallest_capacity_that_holds_the_batch(monkeypatch, runs, want):
    # The kernels stand in (cuDNN needs a GPU) and say which one ran; every branch is compiled.
    ran = set()

    def packed(q, k, v, lengths, offsets):
        jax.debug.callback(lambda c=lengths.shape[1]: ran.add(c))
        return _from_layout(q, k, v, lengths, offsets)

    def masked(q, k, v, segment_ids, impl):
        jax.debug.callback(lambda: ran.add("masked"))
        return jax.nn.dot_product_attention(q, k, v, mask=(segment_ids[:, :, None] == segment_ids[:, None, :])[:, None],
                                            is_causal=True, implementation="xla")
    monkeypatch.setattr(attention, "_packed", packed)
    monkeypatch.setattr(attention, "_masked", masked)
    length = 24
    # row 0: `runs` segments, row 1: a single one
    ids = np.stack([np.arange(length) * runs // length, np.full(length, 7)]).astype(np.int32)
    ids = jnp.asarray(ids)
    keys = jax.random.split(jax.random.key(2), 4)
    q = jax.random.normal(keys[0], (2, length, 4, 8))
    k, v = (jax.random.normal(key, (2, length, 2, 8)) for key in keys[1:3])
    probe = jax.random.normal(keys[3], q.shape)
    out = jax.jit(lambda q, k, v: causal_attention(q, k, v, ids, "cudnn_packed", max_segments=8))(q, k, v)
    jax.effects_barrier()
    assert ran == {want}

    def loss(impl):
        fn = lambda q, k, v: jnp.sum(causal_attention(q, k, v, ids, impl, max_segments=8) * probe)  # noqa: E731
        return jax.value_and_grad(fn, argnums=(0, 1, 2))(q, k, v)
    want_out = causal_attention(q, k, v, ids, "xla")
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    for got, ref in zip(jax.tree.leaves(loss("cudnn_packed")), jax.tree.leaves(loss("xla"))):
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_unknown_implementation():
    q = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="attention implementation"):
        causal_attention(q, q, q, None, "flash")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
@pytest.mark.parametrize("impl", ["cudnn", "cudnn_packed"])
@pytest.mark.parametrize("max_segments", [2, 8])
@pytest.mark.parametrize("quarters", [[[1, 2, 3, 4], [7, 7, 8, 9]], [[1, 1, 1, 1], [5, 5, 5, 5]]])
def test_cudnn_matches_xla_on_gpu(impl, max_segments, quarters):
    # cudnn_packed: rows of 4 and 3 segments take the capacity-4 kernel (max_segments 8) or the
    # masked one (2); rows of one document the capacity-1 kernel
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (2, 256, 4, 64), jnp.bfloat16)
    k = jax.random.normal(keys[1], (2, 256, 2, 64), jnp.bfloat16)
    v = jax.random.normal(keys[2], (2, 256, 2, 64), jnp.bfloat16)
    ids = jnp.asarray(np.repeat(np.array(quarters), 64, axis=1), jnp.int32)
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


def _cache_case(lanes=3, length=64, slots=256, start=96, heads=(4, 2), dtype=jnp.bfloat16, full_mask=False):
    """Queries of a segment at positions start.. over a cache of `slots` slots (later slots
    hold garbage: they are not filled yet), per lane; the mask as the decode path builds it
    (or all true: then only `filled` keeps the queries off the unfilled slots)."""
    keys = jax.random.split(jax.random.key(1), 4)
    q = jax.random.normal(keys[0], (lanes, 1, length, heads[0], 64), dtype)
    k = jax.random.normal(keys[1], (lanes, 1, slots, heads[1], 64), dtype)
    v = jax.random.normal(keys[2], (lanes, 1, slots, heads[1], 64), dtype)
    positions = start + jnp.arange(length)
    mask = (jnp.arange(slots)[None, :] <= positions[:, None])[None, None]  # [1, 1, T, L]
    if full_mask:
        mask = jnp.ones_like(mask)
    probe = jax.random.normal(keys[3], q.shape, jnp.float32)
    return q, k, v, mask, start + length, probe


def _cached_loss(impl, filled_used, case):
    q, k, v, mask, filled, probe = case

    def fn(q, k, v):  # vmapped over lanes as dynamic evaluation runs it; filled is the same for all
        out = jax.vmap(lambda q, k, v: cached_attention(q, k, v, mask, filled if filled_used else None, impl))(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * probe), out
    return jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(q, k, v)


def test_cached_attention_xla_attends_over_the_filled_slots():
    # With a mask that hides nothing, `filled` alone must keep the queries off the later slots.
    q, k, v, mask, filled, probe = case = _cache_case(slots=192, start=32, full_mask=True)
    (_, out), _ = _cached_loss("xla", True, case)
    want = jax.nn.dot_product_attention(q[:, 0], k[:, 0, :filled], v[:, 0, :filled], implementation="xla")
    np.testing.assert_allclose(np.asarray(out[:, 0], np.float32), np.asarray(want, np.float32), atol=1e-2)
    (_, unfilled), _ = _cached_loss("xla", False, case)  # without it, every slot is attended
    assert float(jnp.max(jnp.abs(unfilled.astype(jnp.float32) - out.astype(jnp.float32)))) > 0.1
    with pytest.raises(ValueError, match="xla or cudnn"):
        cached_attention(q[0], k[0], v[0], mask, filled, "cudnn_packed")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
@pytest.mark.parametrize("filled_used", [False, True])
@pytest.mark.parametrize("shape", [dict(start=0), dict(start=96), dict(length=6, slots=130, start=37),
                                   dict(heads=(4, 4), dtype=jnp.float16), dict(start=64, full_mask=True)])
def test_cached_attention_cudnn_matches_xla_on_gpu(filled_used, shape):
    case = _cache_case(**shape)
    (_, out), grads = _cached_loss("cudnn", filled_used, case)
    (_, want), want_grads = _cached_loss("xla", filled_used, case)
    for a, b in zip(jax.tree.leaves((out, grads)), jax.tree.leaves((want, want_grads))):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=0.06, rtol=0.05)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs a GPU")
def test_decode_segments_with_cudnn_match_xla_on_gpu():
    """The body's decode path (cuDNN where it applies) against attention_impl="xla": hidden
    states and parameter gradients over three segments, vmapped over lanes, as dynamic
    evaluation runs it (a random probe, not the norm of the output, makes the gradients
    meaningful after the final RMS norm)."""
    from fwl_jax.models import ModelConfig, TransformerLM
    from fwl_jax.models.decode import init_cache

    def run(impl):
        cfg = ModelConfig(vocab_size=64, d_model=128, num_layers=1, num_heads=4, num_kv_heads=2, mlp_dim=256,
                          max_len=256, dtype="bfloat16", attention_impl=impl)
        model = TransformerLM(cfg)
        tokens = jax.random.randint(jax.random.key(2), (3, 3, 1, 64), 0, 64)  # [lanes, segments, 1, S]
        params = model.init(jax.random.key(0), tokens[0, 0])["params"]
        probe = jax.random.normal(jax.random.key(3), (3, 3, 1, 64, 128), jnp.float32)

        def lane(params, tokens, probe):
            def segment(cache, inputs):
                seg, p = inputs
                h, mutated = model.apply({"params": params, "cache": cache}, seg, decode=True,
                                         method=TransformerLM.hidden, mutable=["cache"])
                return mutated["cache"], (jnp.sum(h.astype(jnp.float32) * p), h)
            _, (losses, hs) = jax.lax.scan(segment, init_cache(model, 1), (tokens, probe))
            return jnp.sum(losses), hs

        def loss(params):
            total, hs = jax.vmap(lane, in_axes=(None, 0, 0))(params, tokens, probe)
            return jnp.sum(total), hs
        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, h), grads = run("auto")
    (_, want_h), want_grads = run("xla")
    np.testing.assert_allclose(np.asarray(h, np.float32), np.asarray(want_h, np.float32), atol=0.06, rtol=0.05)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        scale = float(jnp.max(jnp.abs(b.astype(jnp.float32))))
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=0.03 * scale)


@pytest.mark.skipif(jax.default_backend() != "gpu" or jax.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("layout", [{"data": 1, "fsdp": 2}, {"data": 2, "fsdp": 1}])
@pytest.mark.parametrize("impl", ["cudnn", "cudnn_packed"])
def test_sharded_train_step_with_segments_in_cudnn_on_gpus(layout, impl):
    """The train step with packed documents (cuDNN's masked attention, which needs its
    queries, keys and values sharded alike, and its packed one) on two GPUs, FSDP and
    data-parallel, against one GPU: the same loss. Unconstrained keys and values failed to
    partition under FSDP."""
    from configs import tiny
    from fwl_jax.models import make_mesh
    from fwl_jax.timing import random_batch
    from fwl_jax.train import Trainer

    config = tiny.get_config()
    config.model.attention_impl = impl  # in bfloat16 ("auto" dtype on a GPU)
    batch = random_batch(4, config.data.seq_len, config.data.vocab_size, documents=3)
    losses = []
    for mesh in (make_mesh(devices=jax.devices()[:1]), make_mesh(**layout, devices=jax.devices()[:2])):
        trainer = Trainer(config, mesh)
        _, metrics = trainer.train_step(trainer.init_state(0), trainer.global_batch(batch), jax.random.key(0))
        losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses[0], losses[1], rtol=2e-3)
