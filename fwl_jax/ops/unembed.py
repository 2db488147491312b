"""The vocabulary-sized work of a head, done in chunks of positions with hand-written VJPs.

Everything here is token-local: position t's result depends on ``u_t`` [s] (the head's output
before the unembedding), the unembedding ``U`` [s, V] and bias ``c`` [V], and its target, so
positions can be split into chunks freely. Each function runs ``lax.map`` over chunks of
``chunk`` positions (the last one padded), so at most a [B, chunk, V] slice of logits exists
at a time, and its VJP is written out so that what is kept for the backward pass is chosen,
not left to autodiff:

* :func:`token_nll`: ``-log softmax(u U + c)[target]`` [B, T]. Keeps ``G = softmax - onehot``
  in u's dtype (the compute dtype: its only uses are the backward matmuls); backward is
  ``g_l = g_nll G``, ``g_u = g_l U^T``, ``g_U = u^T g_l``, ``g_c = sum g_l`` (no recomputation).
* :func:`softmax_gradient`: ``du = e U^T`` with ``e = coef (softmax(u U + c) - onehot)``
  [B, T, s], the FWL's per-token gradient at the head output. Its VJP (needed by the ``full``
  meta-gradient) recomputes ``P = softmax(u U + c)`` chunk by chunk instead of keeping a
  [B, T, V] float32 array from the forward pass. With ``g_e = coef g_du U``:
  ``g_l = P (g_e - <P, g_e>)``, ``g_u = g_l U^T``, ``g_U = u^T g_l + e^T g_du``,
  ``g_c = sum g_l``, ``g_coef = <g_du U, P - onehot>``.

Matmuls take their operands in u's dtype with float32 (or wider) accumulation, like
:func:`fwl_jax.ops.fwl._dense`; softmax and the elementwise backward are in the
accumulation dtype.
"""

from __future__ import annotations

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
    return _over_chunks(_softmax_grad, (u, targets, coef), (unembed, bias), chunk)


def _over_chunks(fn, per_position, shared, chunk):
    """``fn(*per_position_chunk, *shared)`` over chunks of the position axis (axis 1)."""
    length = per_position[0].shape[1]
    if chunk <= 0 or chunk >= length:
        return fn(*per_position, *shared)
    count = -(-length // chunk)
    pad = count * chunk - length

    def split(x):  # [B, T, ...] -> [count, B, chunk, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(x.shape[0], count, chunk, *x.shape[2:]), 1, 0)

    out = jax.lax.map(lambda xs: fn(*xs, *shared), tuple(split(x) for x in per_position))
    out = jnp.moveaxis(out, 0, 1)
    return out.reshape(out.shape[0], count * chunk, *out.shape[3:])[:, :length]


def _float0_like(x):
    return np.zeros(x.shape, jax.dtypes.float0)


def _probs_and_onehot(u, unembed, bias, targets):
    l = logits(u, unembed, bias)  # noqa: E741  [B, c, V]
    return jax.nn.softmax(l, axis=-1), jax.nn.one_hot(targets, l.shape[-1], dtype=l.dtype), l


def _backward_matmuls(u, unembed, g_l):
    """Cotangents of ``u U + c`` for the logits cotangent g_l: (g_u, g_U, g_c)."""
    acc = g_l.dtype
    g_in = g_l.astype(u.dtype)
    g_u = jnp.einsum("...v,sv->...s", g_in, unembed.astype(u.dtype), preferred_element_type=acc)
    g_unembed = jnp.einsum("...s,...v->sv", u, g_in, preferred_element_type=acc)
    g_bias = jnp.sum(g_l, axis=tuple(range(g_l.ndim - 1)))
    return g_u, g_unembed, g_bias


# ----------------------------------------------------------------------------- token_nll

@jax.custom_vjp
def _nll(u, targets, unembed, bias):
    return _nll_fwd(u, targets, unembed, bias)[0]


def _nll_fwd(u, targets, unembed, bias):
    probs, onehot, l = _probs_and_onehot(u, unembed, bias, targets)
    nll = jax.nn.logsumexp(l, axis=-1) - jnp.sum(onehot * l, axis=-1)
    return nll, (u, targets, unembed, bias, (probs - onehot).astype(u.dtype))


def _nll_bwd(residuals, g_nll):
    u, targets, unembed, bias, g_logits = residuals
    g_l = g_nll[..., None] * g_logits.astype(g_nll.dtype)
    g_u, g_unembed, g_bias = _backward_matmuls(u, unembed, g_l)
    return (g_u.astype(u.dtype), _float0_like(targets), g_unembed.astype(unembed.dtype),
            g_bias.astype(bias.dtype))


_nll.defvjp(_nll_fwd, _nll_bwd)


# ----------------------------------------------------------------------------- softmax_gradient

@jax.custom_vjp
def _softmax_grad(u, targets, coef, unembed, bias):
    return _softmax_grad_fwd(u, targets, coef, unembed, bias)[0]


def _softmax_grad_fwd(u, targets, coef, unembed, bias):
    probs, onehot, _ = _probs_and_onehot(u, unembed, bias, targets)
    e = coef[..., None].astype(probs.dtype) * (probs - onehot)
    du = jnp.einsum("...v,sv->...s", e.astype(u.dtype), unembed.astype(u.dtype),
                    preferred_element_type=probs.dtype)
    return du, (u, targets, coef, unembed, bias)


def _softmax_grad_bwd(residuals, g_du):
    u, targets, coef, unembed, bias = residuals
    probs, onehot, _ = _probs_and_onehot(u, unembed, bias, targets)  # recomputed, one chunk
    acc = probs.dtype
    scale = coef[..., None].astype(acc)
    g_du_in = g_du.astype(u.dtype)
    g_pe = jnp.einsum("...s,sv->...v", g_du_in, unembed.astype(u.dtype), preferred_element_type=acc)
    g_coef = jnp.sum(g_pe * (probs - onehot), axis=-1)
    g_probs = scale * g_pe
    g_l = probs * (g_probs - jnp.sum(probs * g_probs, axis=-1, keepdims=True))
    g_u, g_unembed, g_bias = _backward_matmuls(u, unembed, g_l)
    e = (scale * (probs - onehot)).astype(u.dtype)
    g_unembed = g_unembed + jnp.einsum("...s,...v->sv", g_du_in, e, preferred_element_type=acc)
    return (g_u.astype(u.dtype), _float0_like(targets), g_coef.astype(coef.dtype),
            g_unembed.astype(unembed.dtype), g_bias.astype(bias.dtype))


_softmax_grad.defvjp(_softmax_grad_fwd, _softmax_grad_bwd)

