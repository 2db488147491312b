"""The chunked vocabulary work (fwl_jax/ops/unembed.py) against plain autodiff of the obvious
expressions: values and every gradient, one chunk and several (lengths not a multiple of the
chunk), float64 and bfloat16; and the heads' token_nll against their logits."""

import dataclasses

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from fwl_jax.ops import fwl, unembed

S, V = 6, 11


def _inputs(dtype, batch=2, length=7, seed=0):
    keys = jax.random.split(jax.random.key(seed), 5)
    u = jax.random.normal(keys[0], (batch, length, S), dtype)
    w = jax.random.normal(keys[1], (S, V), jnp.float32 if dtype == jnp.bfloat16 else dtype)
    c = 0.5 * jax.random.normal(keys[2], (V,), w.dtype)
    targets = jax.random.randint(keys[3], (batch, length), 0, V)
    coef = jax.random.uniform(keys[4], (batch, length), w.dtype) * (jnp.arange(length) % 3 > 0)
    return u, w, c, targets, coef


def _naive_nll(u, w, c, targets):
    logp = jax.nn.log_softmax(unembed.logits(u, w, c), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def _naive_softmax_gradient(u, w, c, targets, coef):
    l = unembed.logits(u, w, c)  # noqa: E741
    e = coef[..., None] * (jax.nn.softmax(l, axis=-1) - jax.nn.one_hot(targets, V, dtype=l.dtype))
    return jnp.einsum("...v,sv->...s", e.astype(u.dtype), w.astype(u.dtype), preferred_element_type=l.dtype)


def _value_and_grads(fn, u, w, c, coef_or_none, probe):
    """fn's value, and the gradients of <fn, probe> with respect to u, w, c (and coef)."""
    args = (u, w, c) if coef_or_none is None else (u, w, c, coef_or_none)
    out = fn(*args)
    grads = jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * probe), argnums=tuple(range(len(args))))(*args)
    return out, grads


@pytest.mark.parametrize("chunk", [0, 1, 3, 7, 9])
def test_token_nll_matches_autodiff(x64, chunk):
    u, w, c, targets, _ = _inputs(jnp.float64)
    probe = jax.random.normal(jax.random.key(7), targets.shape, jnp.float32)
    got = _value_and_grads(lambda u, w, c: unembed.token_nll(u, w, c, targets, chunk=chunk), u, w, c, None, probe)
    want = _value_and_grads(lambda u, w, c: _naive_nll(u, w, c, targets), u, w, c, None, probe)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [0, 2, 5])
def test_softmax_gradient_matches_autodiff(x64, chunk):
    u, w, c, targets, coef = _inputs(jnp.float64)
    probe = jax.random.normal(jax.random.key(8), u.shape, jnp.float32)
    fast = lambda u, w, c, k: unembed.softmax_gradient(u, w, c, targets, k, chunk=chunk)  # noqa: E731
    slow = lambda u, w, c, k: _naive_softmax_gradient(u, w, c, targets, k)  # noqa: E731
    got = _value_and_grads(fast, u, w, c, coef, probe)
    want = _value_and_grads(slow, u, w, c, coef, probe)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def _backward_vocab_matmul_ancestry(jaxpr, vocab):
    """For each [B, chunk, V] matmul of the backward pass (one with an optimization barrier
    among its ancestors): how many vocabulary-sized matmuls ([.., V] outputs, [s, V] ones
    included) of the backward pass are among its ancestors."""
    above = {}  # var -> the ids of the vocabulary-sized matmuls and barriers it depends on
    kinds, counts = {}, []
    for index, eqn in enumerate(jaxpr.eqns):
        deps = set().union(*(above.get(v, set()) for v in eqn.invars if not isinstance(v, jax.extend.core.Literal)))
        backward = any(kinds[d] == "barrier" for d in deps)
        shape = eqn.outvars[0].aval.shape
        if eqn.primitive.name == "optimization_barrier":
            kinds[index] = "barrier"
        elif eqn.primitive.name == "dot_general" and shape[-1] == vocab and backward:
            kinds[index] = "matmul"
            if len(shape) == 3:
                counts.append(sum(kinds[d] == "matmul" for d in deps))
        mine = deps | ({index} if index in kinds else set())
        for out in eqn.outvars:
            above[out] = mine
    return sorted(counts)


def test_softmax_gradient_backward_runs_chunk_after_chunk():
    """The chunks' backward passes are chained, last chunk first, so that only one chunk's
    recomputed [B, chunk, V] arrays need be alive: each chunk's backward (its recomputed
    logits and g_du U) depends on all five vocabulary-sized matmuls of every chunk before it
    in the chain (those two, the two for g_U and the one for g_c), none running beside it.
    Within a chunk, g_du U waits for the recomputed logits (and the pass that reads them), so
    the two float32 [B, chunk, V] arrays are never alive together."""
    u, w, c, targets, coef = _inputs(jnp.float32)  # 7 positions: chunks of 2, 2, 2 and 1
    loss = lambda u, w: jnp.sum(unembed.softmax_gradient(u, w, c, targets, coef, chunk=2) ** 2)  # noqa: E731
    counts = _backward_vocab_matmul_ancestry(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(u, w).jaxpr, V)
    assert counts == [0, 1, 5, 6, 10, 11, 15, 16]


def test_token_nll_sums_the_chunks_unembedding_gradients_apart():
    """The chunks' [s, V] gradients of the unembedding reach an optimization barrier as one
    sum (of all four chunks' matmuls), so XLA adds them as they come instead of keeping each
    until one late add with the unembedding's other uses' gradients (0.07 GiB of the FWL
    head's peak on an H200)."""
    u, w, c, targets, _ = _inputs(jnp.float32)  # 7 positions: chunks of 2, 2, 2 and 1
    loss = lambda u, w: jnp.sum(unembed.token_nll(u, w, c, targets, chunk=2))  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(u, w).jaxpr
    above = {}  # var -> the [s, V] matmuls it depends on
    summed = []
    for index, eqn in enumerate(jaxpr.eqns):
        deps = set().union(*(above.get(v, set()) for v in eqn.invars if not isinstance(v, jax.extend.core.Literal)))
        if eqn.primitive.name == "dot_general" and eqn.outvars[0].aval.shape == (S, V):
            deps = deps | {index}
        if eqn.primitive.name == "optimization_barrier":
            summed += [len(above.get(v, set())) for v in eqn.invars
                       if not isinstance(v, jax.extend.core.Literal) and v.aval.shape == (S, V)]
        for out in eqn.outvars:
            above[out] = deps
    assert summed == [4]


def _peaked_case(case, length=8):
    """u [1, length, 16], U [16, 64] where token 5 dominates the softmax (1 - P ~ 4e-4), targets."""
    keys = jax.random.split(jax.random.key(0), 4)
    u = (0.1 * jax.random.normal(keys[0], (1, length, 16))).at[..., 0].set(1.0)
    w = (0.1 * jax.random.normal(keys[1], (16, 64))).at[0].set(0.0).at[0, 5].set(12.0)
    probe = jax.random.normal(keys[2], (1, length, 16), jnp.float32)
    targets = jnp.full((1, length), 7).at[0, 3].set(5)  # wrong, but one right
    if case == "near_tie":  # token 9 nearly as likely, with a nearly equal column of U
        w = w.at[0, 9].set(11.99).at[1:, 9].set(w[1:, 5] + 0.01)
    if case == "common_mean":  # U's columns share a large direction, and g_du points along it
        mean = jnp.zeros(16).at[0].set(1.0)
        w = 8 * mean[:, None] + 0.3 * jax.random.normal(keys[1], (16, 64))
        u = 0.3 * jax.random.normal(keys[0], (1, length, 16))
        probe = mean * 5 + 0.05 * jax.random.normal(keys[2], (1, length, 16))
        targets = jax.random.randint(keys[3], (1, length), 0, 64)
    return u, w, targets, probe


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("case, tolerance", [("wrong", 1e-2), ("near_tie", 3e-2), ("common_mean", 3e-2)])
def test_softmax_gradient_peaked_softmax_in_narrow_dtypes(x64, dtype, case, tolerance):
    """Peaked softmaxes in bfloat16 and float16: every cotangent of softmax_gradient stays
    within ``tolerance`` of float64 autodiff on the same rounded inputs.

    * wrong: the softmax peaks on a token other than the target, so the rounded target entry
      of P - onehot loses P_t (taken into r = <P, g_e> as it is: 3% off for u's cotangent in
      bfloat16, 25% in float16);
    * near_tie and common_mean: g_e = g_du U has a large part common to the likely tokens, so
      r must be the mean under the rounded probabilities that the logits' cotangent multiplies
      (without that normalisation: 260% and 26% off in bfloat16)."""
    u, w, targets, probe = _peaked_case(case)
    u, w = u.astype(dtype), w.astype(dtype).astype(jnp.float32)
    c = jnp.zeros(64, jnp.float32)
    coef = jnp.linspace(0.5, 1.5, targets.shape[1])[None].astype(jnp.float32)

    def loss(fn, u, w, c, k):
        return jnp.sum(fn(u, w, c, targets, k).astype(jnp.float64) * probe)

    def naive(u, w, c, targets, k):
        e = k[..., None] * (jax.nn.softmax(u @ w + c, axis=-1) - jax.nn.one_hot(targets, 64, dtype=u.dtype))
        return e @ w.T

    wide = lambda x: x.astype(jnp.float64)  # noqa: E731
    want = jax.grad(lambda *a: loss(naive, *a), argnums=(0, 1, 2, 3))(wide(u), wide(w), wide(c), wide(coef))
    got = jax.grad(lambda *a: loss(lambda *b: unembed.softmax_gradient(*b, chunk=3), *a), argnums=(0, 1, 2, 3))(
        u, w, c, coef)
    for name, a, b in zip(["u", "U", "c", "coef"], got, want):
        error = float(jnp.linalg.norm(wide(a) - b) / jnp.linalg.norm(b))
        assert error < tolerance, (name, error)


def test_softmax_gradient_second_order(x64):
    """The hand-written backward is itself differentiable (a Hessian-vector product)."""
    u, w, c, targets, coef = _inputs(jnp.float64, length=5)
    probe = jax.random.normal(jax.random.key(9), u.shape, jnp.float64)

    def grad_norm(fn):
        inner = jax.grad(lambda w: jnp.sum(fn(u, w, c, targets, coef) * probe))
        return jax.grad(lambda w: jnp.sum(jnp.square(inner(w))))(w)

    got = grad_norm(lambda *a: unembed.softmax_gradient(*a, chunk=2))
    want = grad_norm(_naive_softmax_gradient)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)


def test_bfloat16_close_to_float32():
    u, w, c, targets, coef = _inputs(jnp.float32)
    probe = jax.random.normal(jax.random.key(3), targets.shape, jnp.float32)
    fn = lambda u, w, c: unembed.token_nll(u, w, c, targets, chunk=3)  # noqa: E731
    hi = _value_and_grads(fn, u, w, c, None, probe)
    lo = _value_and_grads(fn, u.astype(jnp.bfloat16), w, c, None, probe)
    assert lo[0].dtype == jnp.float32 and lo[1][0].dtype == jnp.bfloat16
    for a, b in zip(jax.tree.leaves(lo), jax.tree.leaves(hi)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), rtol=0.05, atol=0.05)


def test_confident_targets_keep_their_gradient_in_bfloat16():
    """Where the target's probability is near 1 the gradient's target entry P_t - 1 is small;
    it must be rounded as P_t - 1, not as P_t with the 1 subtracted after rounding (that made
    2-7% errors here; rounded as P_t - 1 they stay under 0.3%). The reference runs the same
    bfloat16-rounded inputs in float32."""
    u, w, c, targets, coef = _inputs(jnp.float32)
    # Logit 0 is 7 at every position, the others within about 0.5 of 0: P_0 about 0.99.
    u, w, c = 0.3 * u.at[..., 0].set(1 / 0.3), 0.3 * w.at[:, 0].set(0.0).at[0].set(0.0).at[0, 0].set(7 / 0.3), 0 * c
    targets = jnp.zeros_like(targets)
    u, w, c = (x.astype(jnp.bfloat16).astype(jnp.float32) for x in (u, w, c))
    probe = jax.random.normal(jax.random.key(4), targets.shape, jnp.float32)
    p_target = jax.nn.softmax(unembed.logits(u, w, c), axis=-1)[..., 0]
    assert float(p_target.min()) > 0.9
    for fn, naive in ((lambda u, w, c: unembed.token_nll(u, w, c, targets, chunk=3),
                       lambda u, w, c: _naive_nll(u, w, c, targets)),
                      (lambda u, w, c: unembed.softmax_gradient(u, w, c, targets, coef, chunk=3),
                       lambda u, w, c: _naive_softmax_gradient(u, w, c, targets, coef))):
        probe_here = probe if fn(u, w, c).ndim == 2 else jax.random.normal(jax.random.key(5), u.shape)
        lo = _value_and_grads(fn, u.astype(jnp.bfloat16), w, c, None, probe_here)
        hi = _value_and_grads(naive, u, w, c, None, probe_here)
        for a, b in zip(jax.tree.leaves(lo), jax.tree.leaves(hi)):
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            assert np.linalg.norm(a - b) <= 0.01 * np.linalg.norm(b), (a, b)


def test_targets_outside_the_vocabulary_have_no_onehot(x64):
    """A target outside [0, V) (negative or >= V) has a target logit of 0 and no onehot in
    the gradients."""
    u, w, c, _, coef = _inputs(jnp.float64, length=4)
    targets = jnp.array([[0, -1, V, 3], [V + 5, 2, -3, 1]])

    def naive_nll(u, w, c):
        l = unembed.logits(u, w, c)  # noqa: E741
        onehot = jax.nn.one_hot(targets, V, dtype=l.dtype)  # all zero outside the vocabulary
        return jax.nn.logsumexp(l, axis=-1) - jnp.sum(onehot * l, axis=-1)

    def naive_du(u, w, c, k):
        l = unembed.logits(u, w, c)  # noqa: E741
        e = k[..., None] * (jax.nn.softmax(l, axis=-1) - jax.nn.one_hot(targets, V, dtype=l.dtype))
        return jnp.einsum("...v,sv->...s", e, w)

    probe = jax.random.normal(jax.random.key(6), targets.shape, jnp.float64)
    got = _value_and_grads(lambda u, w, c: unembed.token_nll(u, w, c, targets, chunk=3), u, w, c, None, probe)
    want = _value_and_grads(naive_nll, u, w, c, None, probe)
    probe = jax.random.normal(jax.random.key(7), u.shape, jnp.float64)
    got += _value_and_grads(lambda *a: unembed.softmax_gradient(*a[:3], targets, a[3], chunk=3),
                            u, w, c, coef, probe)
    want += _value_and_grads(naive_du, u, w, c, coef, probe)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def _argmax_targets_bf16(scale, seed=3, length=64, size=256, vocab=1000):
    keys = jax.random.split(jax.random.key(seed), 2)
    u = jax.random.normal(keys[0], (1, length, size)).astype(jnp.bfloat16).astype(jnp.float32)
    w = (scale * jax.random.normal(keys[1], (size, vocab))).astype(jnp.bfloat16).astype(jnp.float32)
    c = jnp.zeros((vocab,), jnp.float32)
    return u, w, c, jnp.argmax(unembed.logits(u, w, c), axis=-1)


def test_bfloat16_argmax_targets_position_by_position():
    """bfloat16 matmuls with float32 accumulation, targets at each position's argmax with
    P_t mostly above 0.99: every NLL is >= 0 and each position's gradient stays within 2% of
    float32 on the same inputs. A target logit formed apart from the logits it is compared
    with (e.g. from the target's column of U) differs by rounding, and that difference lands
    whole in P_t - 1: negative NLLs and per-position errors of order 1. Session 9's code, which
    formed P_t - 1 as exp(l_t - lse) - 1 in float32, failed it too."""
    u, w, c, targets = _argmax_targets_bf16(scale=2.0)
    assert float(jnp.median(1 - jnp.max(jax.nn.softmax(unembed.logits(u, w, c), axis=-1), axis=-1))) < 0.01
    nll = unembed.token_nll(u.astype(jnp.bfloat16), w, c, targets, chunk=24)
    assert float(nll.min()) >= 0
    want = jax.grad(lambda u: jnp.sum(_naive_nll(u, w, c, targets)))(u)
    got = jax.grad(lambda u: jnp.sum(unembed.token_nll(u, w, c, targets, chunk=24)))(u.astype(jnp.bfloat16))
    size = jnp.linalg.norm(want, axis=-1)  # 0 where P_t is 1 in float32
    error = jnp.linalg.norm(got.astype(jnp.float32) - want, axis=-1) / jnp.maximum(size, 1e-3 * jnp.median(size))
    assert float(error.max()) < 0.02, np.asarray(error)


@pytest.mark.parametrize("fn", ["token_nll", "softmax_gradient"])
def test_float16_with_a_large_vocabulary(fn):
    """float16, whose range the softmax's total (about V = 70,000 here: near-flat logits) and
    the per-position factors over it (a mean's 1 / 256 over the total) leave: values and
    gradients finite and within 3% of float32 on the same inputs (the bias's gradient in
    softmax_gradient's backward, from float16 products of order 1e-8, is the farthest, about
    1%; without float16's own path the total overflows and the factors underflow)."""
    vocab, size, scale = 70_000, 8, 1 / 256
    keys = jax.random.split(jax.random.key(0), 3)
    u = (0.03 * jax.random.normal(keys[0], (1, 6, size))).astype(jnp.float16).astype(jnp.float32)
    w = (0.03 * jax.random.normal(keys[1], (size, vocab))).astype(jnp.float16).astype(jnp.float32)
    c = jnp.zeros((vocab,), jnp.float32)
    targets = jax.random.randint(keys[2], (1, 6), 0, vocab)
    coef = jnp.full((1, 6), scale, jnp.float32)
    if fn == "token_nll":
        fast = lambda u, w, c: scale * jnp.sum(unembed.token_nll(u, w, c, targets, chunk=4))  # noqa: E731
        slow = lambda u, w, c: scale * jnp.sum(_naive_nll(u, w, c, targets))  # noqa: E731
    else:
        probe = jax.random.normal(jax.random.key(1), (1, 6, size))
        fast = lambda u, w, c: jnp.sum(unembed.softmax_gradient(u, w, c, targets, coef, chunk=4) * probe)  # noqa: E731
        slow = lambda u, w, c: jnp.sum(jnp.einsum(  # noqa: E731
            "...v,sv->...s", coef[..., None] * (jax.nn.softmax(unembed.logits(u, w, c), axis=-1)
                                                - jax.nn.one_hot(targets, vocab)), w) * probe)
    got = jax.value_and_grad(fast, argnums=(0, 1, 2))(u.astype(jnp.float16), w, c)
    want = jax.value_and_grad(slow, argnums=(0, 1, 2))(u, w, c)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        a = np.asarray(a, np.float32)
        assert np.all(np.isfinite(a))
        assert np.linalg.norm(a - b) <= 0.03 * np.linalg.norm(b)


@pytest.mark.parametrize("dtype,vocab", [(jnp.int8, 11), (jnp.int16, 11), (jnp.uint8, 256), (jnp.uint16, 70_000)])
def test_narrow_integer_targets(dtype, vocab):
    """Targets in a narrow integer dtype, the vocabulary as large as (or larger than) it holds:
    the same values and gradients as int32 targets."""
    keys = jax.random.split(jax.random.key(2), 3)
    u = jax.random.normal(keys[0], (2, 5, S))
    w = 0.5 * jax.random.normal(keys[1], (S, vocab))
    c = jnp.zeros((vocab,))
    top = min(vocab, int(jnp.iinfo(dtype).max) + 1) - 1  # the largest target the dtype holds
    targets = jnp.array([[0, 1, top, 7, 3], [top - 1, 0, 5, min(5_000, top), 1]], jnp.int32)
    results = []
    for t in (targets, targets.astype(dtype)):
        results.append(jax.value_and_grad(lambda u, w: jnp.sum(unembed.token_nll(u, w, c, t, chunk=2)),
                                          argnums=(0, 1))(u, w))
    for a, b in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_token_nll_second_order(x64):
    """Gradients of token_nll's gradients (its forward's scatter and gathers differentiated)
    against autodiff of the naive cross-entropy, with a target outside the vocabulary."""
    u, w, c, targets, _ = _inputs(jnp.float64, length=5)
    targets = targets.at[0, 1].set(V + 2)
    probe = jax.random.normal(jax.random.key(10), targets.shape, jnp.float64)

    def naive(u, w, c):
        l = unembed.logits(u, w, c)  # noqa: E741
        return jax.nn.logsumexp(l, axis=-1) - jnp.sum(jax.nn.one_hot(targets, V, dtype=l.dtype) * l, axis=-1)

    def grad_norm(fn):
        inner = jax.grad(lambda u, w: jnp.sum(fn(u, w, c) * probe), argnums=(0, 1))
        return jax.grad(lambda u, w: sum(jnp.sum(jnp.square(g)) for g in inner(u, w)), argnums=(0, 1))(u, w)

    got = grad_norm(lambda u, w, c: unembed.token_nll(u, w, c, targets, chunk=2))
    want = grad_norm(naive)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_gradient_is_zero_where_coef_is_zero(x64):
    u, w, c, targets, coef = _inputs(jnp.float64)
    du = unembed.softmax_gradient(u, w, c, targets, coef, chunk=4)
    assert np.all(np.asarray(du)[np.asarray(coef) == 0] == 0)


D_MODEL = 5
CFG = fwl.FWLConfig(size=4, vocab_size=7, inner_loss_scale=0.25, hidden_mult=2, step_size_init=0.3,
                    unembed_chunk=0)


@pytest.mark.parametrize("meta_gradient", ["full", "first_order"])
def test_head_token_nll_equals_the_cross_entropy_of_its_logits(x64, meta_gradient):
    cfg = dataclasses.replace(CFG, meta_gradient=meta_gradient)
    keys = jax.random.split(jax.random.key(1), 3)
    params = fwl.init_params(keys[0], D_MODEL, cfg, jnp.float64)
    h = jax.random.normal(keys[1], (2, 9, D_MODEL), jnp.float64)
    targets = jax.random.randint(keys[2], (2, 9), 0, cfg.vocab_size)
    weights = jnp.ones((2, 9), jnp.float64).at[0, 4].set(0.0)
    seg = jnp.asarray([[1] * 5 + [2] * 4, [1] * 9])

    def via_logits(params, h):
        logits, state = fwl.fwl_logits(params, h, targets, weights, cfg, segment_ids=seg)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], state

    def via_nll(params, h, chunk, gradient_chunk=0):
        chunked = dataclasses.replace(cfg, unembed_chunk=chunk, gradient_chunk=gradient_chunk)
        return fwl.fwl_token_nll(params, h, targets, weights, chunked, segment_ids=seg)

    loss = lambda fn: lambda p, h: jnp.sum(fn(p, h)[0] * weights)  # noqa: E731
    want = via_logits(params, h)
    want_grad = jax.grad(loss(via_logits), argnums=(0, 1))(params, h)
    for chunk, gradient_chunk in ((0, 0), (2, 0), (4, 0), (4, 3), (0, 2)):  # gradient_chunk 0: unembed_chunk
        got = via_nll(params, h, chunk, gradient_chunk)
        got_grad = jax.grad(loss(lambda p, h: via_nll(p, h, chunk, gradient_chunk)), argnums=(0, 1))(params, h)
        for a, b in zip(jax.tree.leaves((got, got_grad)), jax.tree.leaves((want, want_grad))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
    slow = fwl.slow_token_nll(params, h, targets, dataclasses.replace(cfg, unembed_chunk=3))
    logp = jax.nn.log_softmax(fwl.slow_logits(params, h, cfg), axis=-1)
    np.testing.assert_allclose(np.asarray(slow), -np.take_along_axis(np.asarray(logp), np.asarray(targets)[..., None],
                                                                     axis=-1)[..., 0], rtol=1e-12)


def test_bad_unembed_chunk():
    with pytest.raises(ValueError, match="unembed_chunk"):
        dataclasses.replace(CFG, unembed_chunk=-1)


@pytest.mark.parametrize("unembed_chunk,gradient_chunk,want", [(4, 0, (4, 4)), (4, 2, (2, 4)), (0, 3, (3, 0))])
def test_gradient_chunk_sets_only_the_per_token_gradients_chunks(monkeypatch, unembed_chunk, gradient_chunk, want):
    cfg = dataclasses.replace(CFG, unembed_chunk=unembed_chunk, gradient_chunk=gradient_chunk)
    seen = {}
    def spy(name):
        original = getattr(unembed, name)

        def wrapped(*args, **kwargs):
            seen[name] = kwargs["chunk"]
            return original(*args, **kwargs)
        monkeypatch.setattr(unembed, name, wrapped)
    spy("softmax_gradient")
    spy("token_nll")
    keys = jax.random.split(jax.random.key(2), 3)
    params = fwl.init_params(keys[0], D_MODEL, cfg)
    h = jax.random.normal(keys[1], (1, 6, D_MODEL))
    targets = jax.random.randint(keys[2], (1, 6), 0, cfg.vocab_size)
    fwl.fwl_token_nll(params, h, targets, jnp.ones((1, 6)), cfg)
    assert (seen["softmax_gradient"], seen["token_nll"]) == want
