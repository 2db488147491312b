"""The vocabulary-sized work of a head, done in chunks of positions with hand-written VJPs.

Everything here is token-local: position t's result depends on ``u_t`` [s] (the head's output
before the unembedding), the unembedding ``U`` [s, V] and bias ``c`` [V], and its target, so
positions can be split into chunks freely. Each function runs over chunks of ``chunk``
positions (unrolled; the last one may be shorter), so each vocabulary-sized temporary is a
[B, chunk, V] slice, and its VJP is written out so that what is kept for the backward pass
is chosen, not left to autodiff. XLA may run unrolled chunks side by side; the backward of
:func:`softmax_gradient`, which recomputes [B, chunk, V] float32 arrays, is chained so that
on GPU it runs one chunk after another (one chunk's recomputed arrays alive at a time):

* :func:`token_nll`: ``-log softmax(u U + c)[target]`` [B, T]. Keeps ``G = softmax - onehot``
  in u's dtype (the compute dtype: its only uses are the backward matmuls), as ``E = total G``
  and ``total`` (see :func:`_softmax_parts`); backward is ``g_u = g_nll (G U^T)``,
  ``g_U = (g_nll u)^T G``, ``g_c = g_nll^T G`` (no recomputation).
* :func:`softmax_gradient`: ``du = e U^T`` with ``e = coef (softmax(u U + c) - onehot)``
  [B, T, s], the FWL's per-token gradient at the head output. Its VJP (needed by the ``full``
  meta-gradient) recomputes ``G = P - onehot`` (``P = softmax(u U + c)``) chunk by chunk from
  the logits, shifted by the forward's max (float16: its logsumexp, and P kept in float32,
  see ``_normalised_softmax_grad_bwd``), instead of keeping a [B, T, V] array; it keeps
  the forward's ``G U^T`` [B, T, s]. With ``g_e = g_du U``, ``g_coef = <g_e, G> =
  <g_du, G U^T>`` (no pass over V) and ``r = <P, g_e> = g_coef + g_e[target]`` (in a narrow
  compute dtype, the mean under the rounded P the cotangent multiplies by, see the backward):
  ``Q = P (g_e - r)``, ``g_u = coef (Q U^T)``, ``g_U = (coef u)^T Q + (coef g_du)^T G``,
  ``g_c = coef^T Q``. Outside float16, the recomputed float32 logits are read once (into G, in
  the compute dtype) and are dead before ``g_e`` (float32) is formed, so the two are never
  alive together.

Per-position factors (``g_nll``, ``coef``, the softmax's ``1 / total``) multiply the narrow
[.., s] side of each matmul, never a [.., V] array, and every vocabulary-sized array is read
as few times as its math needs: the float32 logits twice (their max, then the exponentials'
sum, with the unnormalised softmax the matmuls use written out in the same pass; the
target's logit is gathered, one value a position), and the bias's gradient is a matmul with
the per-position factors (one read). float16 keeps a third pass (see :func:`_softmax_parts`).

Matmuls take their operands in u's dtype with float32 (or wider) accumulation, like
:func:`fwl_jax.ops.fwl._dense`; the softmax's max, sums and the elementwise backward are in
the accumulation dtype, and the array the backward matmuls read is in u's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fwl_jax.ops.linear_attention import accumulation_dtype


def logits(u: jax.Array, unembed: jax.Array, bias: jax.Array) -> jax.Array:
    """``u U + c``: [..., s] -> [..., V] in the accumulation dtype of u."""
    acc = accumulation_dtype(u.dtype)
    return jnp.einsum("...s,sv->...v", u, unembed.astype(u.dtype), preferred_element_type=acc) + bias.astype(acc)


def token_nll(u: jax.Array, unembed: jax.Array, bias: jax.Array, targets: jax.Array, *,
              chunk: int = 0) -> jax.Array:
    """Per-position cross-entropy of the logits ``u U + c``: u [B, T, s], targets [B, T] -> [B, T].

    ``chunk``: positions per chunk (0 or >= T: one chunk).
    """
    return _over_chunks(_nll, (u, targets), (unembed, bias), chunk)


def softmax_gradient(u: jax.Array, unembed: jax.Array, bias: jax.Array, targets: jax.Array,
                     coef: jax.Array, *, chunk: int = 0) -> jax.Array:
    """``coef (softmax(u U + c) - onehot(targets)) U^T``: [B, T, s] (accumulation dtype).

    ``coef`` [B, T] scales each position (its weight times the inner-loss scale).
    """
    return _over_chunks(_softmax_grad, (u, targets, coef), (unembed, bias), chunk, serial_backward=True)


def _over_chunks(fn, per_position, shared, chunk, *, serial_backward=False):
    """``fn(*per_position_chunk, *shared)`` over chunks of the position axis (axis 1).

    The chunks are unrolled (static slices, the last one shorter), not a ``lax.map``: a
    loop would stack each chunk's backward residuals (the [B, chunk, V] array the backward
    matmuls read) into one buffer and copy them in and out, about a fifth of the plain head's time on an H200.
    XLA may run unrolled chunks side by side. ``serial_backward`` chains their backward passes,
    last chunk first (see :func:`_backward_after`), for an ``fn`` whose backward recomputes
    vocabulary-sized arrays: on GPU only one chunk's are then alive (XLA's CPU compiler drops
    the barriers that make the chain, and orders the work as it likes).
    """
    length = per_position[0].shape[1]
    if chunk <= 0 or chunk >= length:
        return fn(*per_position, *shared)
    # The chunks' [s, V] gradients of the shared unembedding are summed as one array before
    # the rest of the backward reads it (see _summed_apart): not kept apart until the sum
    # with the unembedding's other uses, which XLA would otherwise fuse into one late add.
    shared = _summed_apart(tuple(shared))
    outs = []
    for start in range(0, length, chunk):
        pieces = [x[:, start:start + chunk] for x in per_position]
        these = tuple(shared)
        if serial_backward and outs:
            floats = [i for i, x in enumerate(pieces) if jnp.issubdtype(x.dtype, jnp.floating)]
            outs[-1], (moved, these) = _backward_after(outs[-1], ([pieces[i] for i in floats], these))
            for i, x in zip(floats, moved):
                pieces[i] = x
        outs.append(fn(*pieces, *these))
    return jnp.concatenate(outs, axis=1)


@jax.custom_vjp
def _summed_apart(shared):
    """Identity whose backward passes its cotangent (the sum over the chunks that read
    ``shared``) through an optimization barrier, so XLA forms that sum as an array of its own
    rather than adding each chunk's piece in one fusion with the other uses' at the end."""
    return shared


def _summed_apart_fwd(shared):
    return shared, None


def _summed_apart_bwd(_, cotangent):
    return (jax.lax.optimization_barrier(cotangent),)


_summed_apart.defvjp(_summed_apart_fwd, _summed_apart_bwd)


@jax.custom_vjp
def _backward_after(earlier, later):
    """Identity on (the earlier chunk's output, the later chunk's floating inputs: its slices
    and the shared unembedding and bias). In the backward pass the earlier output's cotangent
    is released together with every cotangent of the later chunk's inputs, which all exist
    only once the later chunk's backward is done: the earlier chunk's backward must wait."""
    return earlier, later


def _backward_after_fwd(earlier, later):
    return (earlier, later), None


def _backward_after_bwd(_, cotangents):
    return jax.lax.optimization_barrier(cotangents)


_backward_after.defvjp(_backward_after_fwd, _backward_after_bwd)


def _float0_like(x):
    return np.zeros(x.shape, jax.dtypes.float0)


class _Parts(NamedTuple):
    """What :func:`_softmax_parts` gives: ``grad / total = softmax(l) - onehot(target)``."""

    peak: jax.Array  # [...] the shift of the exponentials: the logits' max in a forward (their
    #                  logsumexp in float16), or the one given to _softmax_parts
    total: jax.Array  # [...] sum of exp(l - peak); 1 in float16 (grad normalised)
    target_logit: jax.Array  # [...] l at the target (0 for a target outside the vocabulary)
    target_exp: jax.Array  # [...] the target's entry of softmax times total (for a target
    #                        outside the vocabulary exp(0) / total-or-1: unused, its scatter drops)
    grad: jax.Array  # [..., V] in u's dtype
    rounded_total: jax.Array  # [...] sum of exp(l - peak) as rounded into grad (before its
    #                           target entry is set); total in float16

    @property
    def lse(self):
        return self.peak + jnp.log(self.total)


def _softmax_parts(u, unembed, bias, targets, peak=None):
    """What a forward (or a backward's recomputation) keeps for its matmuls, ``grad`` [..., V]
    in u's dtype with ``grad / total = softmax(l) - onehot(target)`` (see :class:`_Parts`).

    Two passes over the float32 logits l: the max (skipped when ``peak`` is given: a backward
    passes its forward's), then one that sums the shifted exponentials and writes them out
    in u's dtype alongside (no third pass to normalise them: ``1 / total`` is a per-position
    factor, applied on the narrow side of the matmuls that use grad). The target's logit is
    gathered from l (one value a position, not a pass). The target's entry of grad is then set
    to ``exp(l_t - peak) - total`` (a scatter of one value a position), so that it is rounded
    as ``P_t - 1`` would be, not as ``P_t`` with 1 subtracted after rounding (which loses
    ``P_t - 1`` when ``P_t`` is near 1). A target outside the vocabulary gets no onehot and a
    target logit of 0.

    float16 (whose range ``total``, up to V, and the factors ``1 / total`` can leave) keeps
    the normalised ``grad = softmax - onehot`` with ``total = 1``, written in a third pass."""
    l = logits(u, unembed, bias)  # noqa: E741
    vocab = l.shape[-1]
    targets, inside = _checked_targets(targets, vocab)
    target_logit = _at_target(l, targets, inside)
    if peak is None:
        peak = jnp.max(l, axis=-1)
    shifted = jnp.exp(l - peak[..., None])
    total = jnp.sum(shifted, axis=-1)
    # exp of 0 for a target outside the vocabulary (its value is dropped; exp(-max) could be
    # inf, and inf times a zero cotangent is NaN in higher-order derivatives).
    target_exp = jnp.exp(jnp.where(inside, target_logit - peak, 0))
    if not _wide_range(u.dtype):
        lse = peak + jnp.log(total)
        grad = (jnp.exp(l - lse[..., None]) - (jnp.arange(vocab) == targets[..., None])).astype(u.dtype)
        return _Parts(lse, jnp.ones_like(total), target_logit, target_exp / total, grad, total)
    rounded = shifted.astype(u.dtype)
    grad = rounded.at[_target_index(targets, inside, vocab)].set(
        (target_exp - total).astype(u.dtype), mode="drop", unique_indices=True)
    return _Parts(peak, total, target_logit, target_exp, grad, jnp.sum(rounded.astype(total.dtype), axis=-1))


def _checked_targets(targets, vocab):
    """(targets in at least int32, where V fits; whether each is inside the vocabulary)."""
    targets = targets.astype(jnp.promote_types(targets.dtype, jnp.int32))
    return targets, (targets >= 0) & (targets < vocab)


def _at_target(x, targets, inside):
    """x [..., V] at each position's target (one value a position, 0 outside the vocabulary)."""
    return jnp.where(inside, jnp.take_along_axis(x, jnp.where(inside, targets, 0)[..., None], axis=-1)[..., 0], 0)


def _target_index(targets, inside, vocab):
    """Index of each position's target entry in a [..., V] array (V, dropped, outside it)."""
    return tuple(jnp.indices(targets.shape, sparse=True)) + (jnp.where(inside, targets, vocab),)


def _wide_range(dtype) -> bool:
    """Whether ``dtype`` has float32's exponent range (bfloat16, float32, float64; not float16)."""
    return jnp.finfo(dtype).maxexp >= jnp.finfo(jnp.float32).maxexp


def _scaled_backward_matmuls(u, unembed, grad, scale):
    """Cotangents of ``u U + c`` for the logits cotangent ``scale[..., None] * grad``:
    (g_u, g_U, g_c) in the accumulation dtype. ``grad`` [..., V] is in the compute dtype and
    the per-position ``scale`` [...] is applied on the narrow side of each matmul, so no
    vocabulary-sized pass is spent on it."""
    acc = scale.dtype
    g_u = scale[..., None] * jnp.einsum("...v,sv->...s", grad, unembed.astype(u.dtype), preferred_element_type=acc)
    scaled_u = (scale[..., None] * u.astype(acc)).astype(u.dtype)
    g_unembed = jnp.einsum("...s,...v->sv", scaled_u, grad, preferred_element_type=acc)
    # A matmul with the per-position scale (one read of grad), not a reduction over its
    # converted float32 values (on an H200 that reduction took 4x the time of a read).
    if _wide_range(u.dtype):
        g_bias = jnp.einsum("...,...v->v", scale.astype(u.dtype), grad, preferred_element_type=acc)
    else:  # float16: the per-position factors (a mean's 1 / token count) can underflow in it
        g_bias = jnp.sum(scale[..., None] * grad.astype(acc), axis=tuple(range(grad.ndim - 1)))
    return g_u, g_unembed, g_bias


# ----------------------------------------------------------------------------- token_nll

@jax.custom_vjp
def _nll(u, targets, unembed, bias):
    return _nll_fwd(u, targets, unembed, bias)[0]


def _nll_fwd(u, targets, unembed, bias):
    parts = _softmax_parts(u, unembed, bias, targets)  # grad / total = softmax - onehot
    return parts.lse - parts.target_logit, (u, targets, unembed, bias, parts.grad, parts.total)


def _nll_bwd(residuals, g_nll):
    u, targets, unembed, bias, grad, total = residuals
    g_u, g_unembed, g_bias = _scaled_backward_matmuls(u, unembed, grad, g_nll / total)
    return (g_u.astype(u.dtype), _float0_like(targets), g_unembed.astype(unembed.dtype),
            g_bias.astype(bias.dtype))


_nll.defvjp(_nll_fwd, _nll_bwd)


# ----------------------------------------------------------------------------- softmax_gradient

@jax.custom_vjp
def _softmax_grad(u, targets, coef, unembed, bias):
    return _softmax_grad_fwd(u, targets, coef, unembed, bias)[0]


def _softmax_grad_fwd(u, targets, coef, unembed, bias):
    parts = _softmax_parts(u, unembed, bias, targets)  # grad / total = softmax - onehot
    acc = parts.total.dtype
    # (softmax - onehot) U^T, kept (a [.., s] array) for the backward's cotangent of coef.
    unscaled = jnp.einsum("...v,sv->...s", parts.grad, unembed.astype(u.dtype),
                          preferred_element_type=acc) / parts.total[..., None]
    du = coef.astype(acc)[..., None] * unscaled
    return du, (u, targets, coef, unembed, bias, parts.peak, unscaled)


def _softmax_grad_bwd(residuals, g_du):
    # Nothing of this backward (the logits' recomputation included) starts before g_du exists.
    residuals, g_du = jax.lax.optimization_barrier((residuals, g_du))
    u, targets, coef, unembed, bias, peak, unscaled = residuals
    if not _wide_range(u.dtype):
        return _normalised_softmax_grad_bwd(u, targets, coef, unembed, bias, peak, g_du)
    # The logits recomputed, one chunk, and read once: into grad (grad / total = P - onehot,
    # P the softmax), shifted by the forward's max (no max pass).
    parts = _softmax_parts(u, unembed, bias, targets, peak)
    # g_pe's matmul waits for grad, so the logits (float32, dead once grad exists) and g_pe
    # are never alive together.
    grad, total, target_exp, rounded_total, g_du = jax.lax.optimization_barrier(
        (parts.grad, parts.total, parts.target_exp, parts.rounded_total, g_du))
    acc = total.dtype
    vocab = grad.shape[-1]
    targets, inside = _checked_targets(targets, vocab)
    scale = coef.astype(acc)
    g_du_in = g_du.astype(u.dtype)
    g_pe = jnp.einsum("...s,sv->...v", g_du_in, unembed.astype(u.dtype), preferred_element_type=acc)
    # With e = coef (P - onehot): g_coef = <g_pe, P - onehot> = <g_du, (P - onehot) U^T>, from
    # the forward's [.., s] product (the same rounded g_du as g_pe's, no pass over g_pe). The
    # logits' cotangent is coef P (g_pe - r), r = <P, g_pe> = g_coef + g_pe[target].
    g_pe_target = _at_target(g_pe, targets, inside)
    # The probabilities the pass below multiplies by are grad's rounded entries / total off
    # the target and the exact target_exp / total at it. r is their weighted mean of g_pe:
    # normalised by their own sum (not 1 once rounded), so that the logits' cotangent sums to
    # 0 and does not change when g_pe is shifted by a constant, as the exact one does (without
    # it, a g_pe with a large common part, as near-tied tokens with similar columns of U give,
    # left errors of that part times the rounding). grad's target entry, total (P_t - 1), was
    # rounded too, which loses P_t itself when it is small (a confident wrong prediction):
    # that known rounding comes back out of the product. Both are no-ops in float32 compute.
    exact = target_exp - total
    rounding = jnp.where(inside, exact.astype(u.dtype).astype(acc) - exact, 0)
    weighted = jnp.sum(g_du_in.astype(acc) * unscaled, axis=-1) - rounding / total * g_pe_target + g_pe_target
    weights_sum = (rounded_total + jnp.where(inside, target_exp - target_exp.astype(u.dtype).astype(acc), 0)) / total
    mean_g = weighted / weights_sum
    g_coef = mean_g - g_pe_target
    # total P (g_pe - r) = grad (g_pe - r) off the target, target_exp (g_pe - r) at it (grad
    # holds total (P_t - 1) there).
    unnormalised = (grad.astype(acc) * (g_pe - mean_g[..., None])).astype(u.dtype).at[
        _target_index(targets, inside, vocab)].set(
        (target_exp * (g_pe_target - mean_g)).astype(u.dtype), mode="drop", unique_indices=True)
    g_u, g_unembed, g_bias = _scaled_backward_matmuls(u, unembed, unnormalised, scale / total)
    scaled_g_du = ((scale / total)[..., None] * g_du.astype(acc)).astype(u.dtype)
    g_unembed = g_unembed + jnp.einsum("...s,...v->sv", scaled_g_du, grad, preferred_element_type=acc)
    return (g_u.astype(u.dtype), _float0_like(targets), g_coef.astype(coef.dtype),
            g_unembed.astype(unembed.dtype), g_bias.astype(bias.dtype))


def _normalised_softmax_grad_bwd(u, targets, coef, unembed, bias, lse, g_du):
    """float16's backward (``lse`` is what its forward keeps as the shift): the softmax P in
    float32 from the recomputed logits, for ``r = <P, g_pe>`` and the logits' cotangent (P - 1
    rounded to float16 would lose P when P is near 1, at 2^-11)."""
    probs = jnp.exp(logits(u, unembed, bias) - lse[..., None])
    acc = probs.dtype
    targets, _ = _checked_targets(targets, probs.shape[-1])
    is_target = jnp.arange(probs.shape[-1]) == targets[..., None]
    scale = coef.astype(acc)
    g_pe = jnp.einsum("...s,sv->...v", g_du.astype(u.dtype), unembed.astype(u.dtype), preferred_element_type=acc)
    mean_g = jnp.sum(probs * g_pe, axis=-1)
    g_coef = mean_g - jnp.sum(jnp.where(is_target, g_pe, 0), axis=-1)
    g_u, g_unembed, g_bias = _scaled_backward_matmuls(
        u, unembed, (probs * (g_pe - mean_g[..., None])).astype(u.dtype), scale)
    scaled_g_du = (scale[..., None] * g_du.astype(acc)).astype(u.dtype)
    g_unembed = g_unembed + jnp.einsum("...s,...v->sv", scaled_g_du, (probs - is_target).astype(u.dtype),
                                       preferred_element_type=acc)
    return (g_u.astype(u.dtype), _float0_like(targets), g_coef.astype(coef.dtype),
            g_unembed.astype(unembed.dtype), g_bias.astype(bias.dtype))


_softmax_grad.defvjp(_softmax_grad_fwd, _softmax_grad_bwd)
