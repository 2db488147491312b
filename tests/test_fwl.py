"""The FWL head: exactness against explicit gradient steps, batch invariance, windows,
decoding, meta-gradients, bad input and bfloat16."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fwl_jax.ops import fwl
from fwl_jax.ops.reference import fwl_logits_reference

D_MODEL = 5
CFG = fwl.FWLConfig(size=4, vocab_size=7, inner_loss_scale=0.25, hidden_mult=2, step_size_init=0.3)


def _setup(seed=0, batch=2, length=9, cfg=CFG, dtype=jnp.float64, segments=True):
    """Params (step sizes made distinct), h, targets, weights with zeros, packed segment ids."""
    keys = jax.random.split(jax.random.key(seed), 6)
    params = fwl.init_params(keys[0], D_MODEL, cfg, dtype)
    raw = jax.random.normal(keys[1], (6,), dtype) * 0.3 + fwl.inverse_softplus(cfg.step_size_init)
    params["step_size_raw"] = dict(zip(fwl.FAST_TENSORS, raw))
    params["ln_scale"] = params["ln_scale"] + 0.1 * jax.random.normal(keys[2], params["ln_scale"].shape, dtype)
    params["b1"] = 0.1 * jax.random.normal(keys[3], params["b1"].shape, dtype)
    h = jax.random.normal(keys[4], (batch, length, D_MODEL), dtype)
    targets = jax.random.randint(keys[5], (batch, length), 0, cfg.vocab_size)
    weights = jnp.asarray(np.random.default_rng(seed).random((batch, length)) > 0.25, dtype)
    seg = None
    if segments:
        cut = np.sort(np.random.default_rng(seed + 1).choice(np.arange(1, length), size=(batch, 2)), axis=1)
        seg = np.ones((batch, length), np.int32)
        for b in range(batch):
            seg[b, cut[b, 0]:] = 2
            seg[b, cut[b, 1]:] = 3
        seg = jnp.asarray(seg)
    return params, h, targets, weights, seg


def _close(a, b, rtol=1e-9, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


CONFIGS = {
    "default": CFG,
    "prefix_mean": dataclasses.replace(CFG, inner_loss_normalization="prefix_mean"),
    "kernels_only": dataclasses.replace(CFG, fast_update=("W1", "W2")),
    "norm_only": dataclasses.replace(CFG, fast_update=("ln_scale", "ln_bias", "b2")),
    "chunked": dataclasses.replace(CFG, attention_method="chunked", chunk_size=3),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_exactness_against_explicit_gradient_steps(x64, name):
    cfg = CONFIGS[name]
    params, h, targets, weights, seg = _setup(1, cfg=cfg)
    logits, _ = fwl.fwl_logits(params, h, targets, weights, cfg, segment_ids=seg)
    want = fwl_logits_reference(params, h, targets, weights, cfg, segment_ids=seg)
    _close(logits, want)
    # The update is not trivial: fast logits differ from slow ones after each segment's start.
    assert float(jnp.abs(logits - fwl.slow_logits(params, h, cfg)).max()) > 1e-3


@pytest.mark.parametrize("name", ["default", "prefix_mean"])
def test_exactness_with_carried_state(x64, name):
    """The state from an earlier window acts as extra prefix tokens of the first segment."""
    cfg = CONFIGS[name]
    params, h_prev, t_prev, w_prev, _ = _setup(2, length=6, cfg=cfg, segments=False)
    _, h, targets, weights, seg = _setup(3, length=7, cfg=cfg)
    _, state = fwl.fwl_logits(params, h_prev, t_prev, w_prev, cfg)
    logits, _ = fwl.fwl_logits(params, h, targets, weights, cfg, segment_ids=seg, state=state)
    want = fwl_logits_reference(params, h, targets, weights, cfg, segment_ids=seg,
                                history=(h_prev, t_prev, w_prev))
    _close(logits, want)


def test_batch_invariance(x64):
    params, h, targets, weights, seg = _setup(4, batch=1)
    alone, state_alone = fwl.fwl_logits(params, h, targets, weights, CFG, segment_ids=seg)
    _, h2, t2, w2, seg2 = _setup(5, batch=3)
    w2 = w2.at[:, 5:].set(0)  # padding elsewhere in the batch
    seg2 = seg2.at[:, 5:].set(0)
    logits, state = fwl.fwl_logits(params, jnp.concatenate([h2[:1], h, h2[1:]]),
                                   jnp.concatenate([t2[:1], targets, t2[1:]]),
                                   jnp.concatenate([w2[:1], weights, w2[1:]]), CFG,
                                   segment_ids=jnp.concatenate([seg2[:1], seg, seg2[1:]]))
    _close(logits[1:2], alone, rtol=1e-12)
    for name in state:
        _close(state[name][1:2], state_alone[name], rtol=1e-12)


@pytest.mark.parametrize("name", ["default", "prefix_mean", "kernels_only"])
@pytest.mark.parametrize("windows", [2, 3, 7])
def test_windows_with_carried_state_equal_one_call(x64, name, windows):
    cfg = CONFIGS[name]
    params, h, targets, weights, _ = _setup(6, length=14, cfg=cfg, segments=False)
    whole, whole_state = fwl.fwl_logits(params, h, targets, weights, cfg)
    bounds = np.linspace(0, 14, windows + 1).astype(int)
    state, parts = None, []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part, state = fwl.fwl_logits(params, h[:, lo:hi], targets[:, lo:hi], weights[:, lo:hi], cfg, state=state)
        parts.append(part)
    _close(jnp.concatenate(parts, axis=1), whole)
    for name in whole_state:
        _close(state[name], whole_state[name])


@pytest.mark.parametrize("name", ["default", "prefix_mean", "norm_only"])
def test_token_by_token_decoding_equals_one_call(x64, name):
    cfg = CONFIGS[name]
    params, h, targets, weights, _ = _setup(7, length=6, cfg=cfg, segments=False)
    whole, whole_state = fwl.fwl_logits(params, h, targets, weights, cfg)
    state = fwl.init_state(2, D_MODEL, cfg, jnp.float64)
    for t in range(h.shape[1]):
        _close(fwl.fwl_logits_step(params, state, h[:, t], cfg), whole[:, t])
        state = fwl.update_state(params, state, h[:, t], targets[:, t], weights[:, t], cfg)
    for key in whole_state:
        _close(state[key], whole_state[key])


def _loss(logits, probe):
    return jnp.sum(jnp.tanh(logits) * probe)


def _params_and_h_grads(cfg, seed=8, length=5):
    params, h, targets, weights, seg = _setup(seed, length=length, cfg=cfg)
    probe = jax.random.normal(jax.random.key(seed + 100), (2, length, cfg.vocab_size), jnp.float64)
    fast = lambda p, x: _loss(fwl.fwl_logits(p, x, targets, weights, cfg, segment_ids=seg)[0], probe)  # noqa: E731
    first_order = cfg.meta_gradient == "first_order"
    ref = lambda p, x: _loss(fwl_logits_reference(p, x, targets, weights, cfg, segment_ids=seg,  # noqa: E731
                                                  first_order=first_order), probe)
    return params, h, fast, ref


def test_full_meta_gradient_matches_finite_differences_and_construction(x64):
    params, h, fast, ref = _params_and_h_grads(CFG)
    check_grads(fast, (params, h), order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)
    got = jax.grad(fast, argnums=(0, 1))(params, h)
    want = jax.grad(ref, argnums=(0, 1))(params, h)
    jax.tree.map(lambda a, b: _close(a, b, rtol=1e-8, atol=1e-11), got, want)
    assert all(float(jnp.abs(g)) > 0 for g in got[0]["step_size_raw"].values())


def test_first_order_meta_gradient(x64):
    cfg = dataclasses.replace(CFG, meta_gradient="first_order")
    params, h, fast, ref = _params_and_h_grads(cfg)
    _, _, fast_full, _ = _params_and_h_grads(CFG)
    assert float(fast(params, h)) == pytest.approx(float(fast_full(params, h)), rel=1e-12)
    got = jax.grad(fast, argnums=(0, 1))(params, h)
    want = jax.grad(ref, argnums=(0, 1))(params, h)
    jax.tree.map(lambda a, b: _close(a, b, rtol=1e-8, atol=1e-11), got, want)
    full = jax.grad(fast_full, argnums=(0, 1))(params, h)
    assert float(jnp.abs(got[0]["unembed"] - full[0]["unembed"]).max()) > 1e-6
    assert float(jnp.abs(got[1] - full[1]).max()) > 1e-6
    assert all(float(jnp.abs(g)) > 0 for g in got[0]["step_size_raw"].values())


def test_attention_methods_agree_in_the_head(x64):
    params, h, targets, weights, seg = _setup(9, length=11)
    outs = []
    for method in ("quadratic", "chunked", "recurrent"):
        cfg = dataclasses.replace(CFG, attention_method=method, chunk_size=4)
        loss = lambda p: jnp.sum(fwl.fwl_logits(p, h, targets, weights, cfg, segment_ids=seg)[0] ** 2)  # noqa: E731
        outs.append(jax.value_and_grad(loss)(params))
    for value, grads in outs[1:]:
        _close(value, outs[0][0])
        jax.tree.map(_close, grads, outs[0][1])


def test_jit_with_config_as_static_argument():
    params, h, targets, weights, seg = _setup(10, dtype=jnp.float32)
    jitted = jax.jit(fwl.fwl_logits, static_argnums=4)
    logits, state = jitted(params, h, targets, weights, CFG, segment_ids=seg)
    eager, _ = fwl.fwl_logits(params, h, targets, weights, CFG, segment_ids=seg)
    _close(logits, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mixed", [True, False])
def test_bfloat16_inputs(mixed):
    params, h, targets, weights, seg = _setup(11, length=32, dtype=jnp.float32)
    cfg = dataclasses.replace(CFG, attention_mixed_precision=mixed)
    ref, ref_state = fwl.fwl_logits(params, h, targets, weights, cfg, segment_ids=seg)
    logits, state = fwl.fwl_logits(params, h.astype(jnp.bfloat16), targets, weights, cfg, segment_ids=seg)
    assert logits.dtype == jnp.float32
    assert all(s.dtype == jnp.float32 for s in state.values())
    other = dataclasses.replace(cfg, attention_mixed_precision=not mixed)
    assert float(jnp.abs(logits - fwl.fwl_logits(params, h.astype(jnp.bfloat16), targets, weights, other,
                                                  segment_ids=seg)[0]).max()) > 0  # the setting reaches the head
    # bf16 matmul inputs: ~2^-8 relative error per rounding, a few roundings deep.
    assert float(jnp.abs(logits - ref).max()) < 5e-2 * float(jnp.abs(ref).max())
    for name in ref_state:
        scale = float(jnp.abs(ref_state[name]).max())
        assert float(jnp.abs(state[name] - ref_state[name]).max()) < 5e-2 * scale


def _dot_operands(fn, *args):
    """(element type, shape) of both operands of every dot_general in ``fn``'s lowered program."""
    text = jax.jit(fn).lower(*args).as_text()
    return [re.findall(r"tensor<([0-9x]*)x(bf16|f16|f32|f64)>", line.split(" : (")[1].split(") ->")[0])
            for line in text.splitlines() if "stablehlo.dot_general" in line]


@pytest.mark.parametrize("meta_gradient", ["full", "first_order"])
def test_bfloat16_gradients_run_matmuls_in_bfloat16(meta_gradient):
    """With bfloat16 inputs the head's backward rounds its cotangents to bfloat16 before its
    matmuls (the dense layers' and the per-token gradient's), as a bfloat16 network's backward
    does, instead of widening the operands to float32 matmuls. With the kernels the only fast
    tensors (the vector tensors' prefix sums are float32 by design) every matmul of the
    gradient takes bfloat16 operands. The gradients stay within bfloat16's error of float32's."""
    params, h, targets, weights, seg = _setup(12, length=32, dtype=jnp.float32)
    cfg = dataclasses.replace(CFG, fast_update=("W1", "W2"), meta_gradient=meta_gradient)
    probe = jax.random.normal(jax.random.key(3), targets.shape, jnp.float32)

    def grads(params, h):
        loss = lambda p, h: jnp.sum(fwl.fwl_token_nll(p, h, targets, weights, cfg, segment_ids=seg)[0] * probe)  # noqa: E731
        return jax.grad(loss, argnums=(0, 1))(params, h)

    operands = _dot_operands(grads, params, h.astype(jnp.bfloat16))
    assert len(operands) >= 20 and all(len(o) == 2 for o in operands)
    assert [o for o in operands if any(dtype != "bf16" for _, dtype in o)] == []
    want = grads(params, h)
    got = grads(params, h.astype(jnp.bfloat16))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        scale = float(jnp.abs(b).max())
        assert float(jnp.abs(a.astype(jnp.float32) - b).max()) < 5e-2 * scale + 1e-6


def test_init_params_tree_and_step_size():
    params = fwl.init_params(jax.random.key(0), 6, CFG)
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {"W1": (6, 8), "b1": (8,), "W2": (8, 4), "b2": (4,), "ln_scale": (4,), "ln_bias": (4,),
                      "unembed": (4, 7), "unembed_bias": (7,),
                      "step_size_raw": {n: () for n in fwl.FAST_TENSORS}}
    for eta in fwl.step_sizes(params).values():
        assert float(eta) == pytest.approx(CFG.step_size_init, rel=1e-6)


@pytest.mark.parametrize("field,value,match", [
    ("size", 0, "size must be a positive int"),
    ("chunk_size", -1, "chunk_size must be an int >= 0"),
    ("unembed_chunk", 1.5, "unembed_chunk must be an int >= 0"),
    ("gradient_chunk", -2, "gradient_chunk must be an int >= 0"),
    ("inner_loss_scale", -1.0, "inner_loss_scale must be a positive"),
    ("meta_gradient", "second", "meta_gradient must be one of"),
    ("attention_method", "flash", "attention_method must be one of"),
    ("fast_update", ("W1", "W3"), "unknown tensors"),
    ("inner_loss_normalization", "mean", "inner_loss_normalization must be one of"),
    ("attention_mixed_precision", 1, "attention_mixed_precision must be True or False"),
])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CFG, **{field: value})


def test_targets_closed_over_by_a_jitted_function_are_checked():
    """Concrete targets captured by a traced function are still checked (not a tracer error)."""
    params, h, targets, weights, seg = _setup(13, dtype=jnp.float32)
    nll = jax.jit(lambda h: fwl.slow_token_nll(params, h, targets, CFG))(h)
    _close(nll, fwl.slow_token_nll(params, h, targets, CFG), rtol=1e-5, atol=1e-6)
    bad = targets.at[0, 0].set(CFG.vocab_size)
    with pytest.raises(ValueError, match="targets must lie in"):
        jax.jit(lambda h: fwl.fwl_token_nll(params, h, bad, weights, CFG)[0])(h)


def test_bad_input_names_the_argument():
    params, h, targets, weights, seg = _setup(12, dtype=jnp.float32)
    call = lambda **kw: fwl.fwl_logits(**{**dict(params=params, h=h, targets=targets, weights=weights,  # noqa: E731
                                                  cfg=CFG, segment_ids=seg), **kw})
    cases = [
        (dict(h=h[..., :3]), "h must have shape"),
        (dict(h=h[0]), "h must have shape"),
        (dict(h=h.astype(jnp.int32)), "h must be floating"),
        (dict(targets=targets[:, :4]), "targets must have shape"),
        (dict(targets=targets.astype(jnp.float32)), "targets must be an integer"),
        (dict(targets=targets.at[0, 0].set(CFG.vocab_size)), "targets must lie in"),
        (dict(targets=targets.at[0, 0].set(-1)), "targets must lie in"),
        (dict(weights=weights[:1]), "weights must have shape"),
        (dict(weights=weights.astype(jnp.int32)), "weights must be floating-point or bool"),
        (dict(segment_ids=seg.astype(jnp.float32)), "segment_ids must be an integer"),
        (dict(state={"W1": jnp.zeros((2, 5, 8))}), "state must be a dict with keys"),
        (dict(state={**fwl.init_state(2, D_MODEL, CFG), "W1": jnp.zeros((2, 5, 9))}), r"state\['W1'\]"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            call(**kwargs)
    with pytest.raises(ValueError, match="h_t must have shape"):
        fwl.fwl_logits_step(params, fwl.init_state(2, D_MODEL, CFG), h, CFG)
