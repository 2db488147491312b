"""Naive references, written straight from the definitions, for the tests and for anyone who
wants to check a fast path: slow, obvious, and independent of the code they check.

* :func:`causal_linear_attention_reference` builds every position's prefix state
  explicitly ([B, T, Dk, Dv] memory): no masks shared with the fast methods, no chunks.
* :func:`fwl_logits_reference` builds, for every position t, the updated weights
  ``theta - eta * grad_theta sum_{i in P(t)} L_i(theta)`` with ``jax.grad`` through
  :func:`fwl_jax.ops.fwl.slow_logits` and evaluates the slow head with them. It
  materialises per-position weight copies and is meant for tiny shapes only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fwl_jax.ops import fwl
from fwl_jax.ops.linear_attention import accumulation_dtype


def same_segment_before(segment_ids: jax.Array, t: int) -> jax.Array:
    """[B, t + 1] bool: position i <= t lies in t's contiguous segment (equal ids all the way)."""
    same = segment_ids[:, : t + 1] == segment_ids[:, t : t + 1]
    return jnp.cumprod(same[:, ::-1], axis=1)[:, ::-1].astype(bool)


def causal_linear_attention_reference(q, k, v, *, segment_ids=None, initial_state=None):
    """``(out, final_state)`` of :func:`causal_linear_attention`, computed token by token."""
    batch, length, dk = q.shape
    acc = accumulation_dtype(q.dtype, k.dtype, v.dtype)
    if segment_ids is None:
        segment_ids = jnp.zeros((batch, length), jnp.int32)
    s0 = jnp.zeros((batch, dk, v.shape[2]), acc) if initial_state is None else initial_state.astype(acc)
    outer = jnp.einsum("btk,btv->btkv", k.astype(acc), v.astype(acc))  # [B, T, Dk, Dv]
    outs = []
    for t in range(length + 1):
        last = min(t, length - 1)
        same = same_segment_before(segment_ids, last).astype(acc)  # [B, last + 1]
        upto = t  # tokens strictly before t; for the final state (t == T) all of them
        state = jnp.einsum("bi,bikv->bkv", same[:, :upto], outer[:, :upto]) + same[:, :1, None] * s0
        if t < length:
            outs.append(jnp.einsum("bk,bkv->bv", q[:, t].astype(acc), state))
    return jnp.stack(outs, axis=1), state


def _prefix_weights(weights, segment_ids, t):
    """[B, T] weight of each token in position t's inner loss; [B] whether t sees the history."""
    same = same_segment_before(segment_ids, t).astype(weights.dtype)  # [B, t + 1]
    in_prefix = jnp.zeros_like(weights).at[:, :t].set(same[:, :t])  # strictly before t
    return in_prefix * weights, same[:, 0]


def fwl_logits_reference(params, h, targets, weights, cfg: fwl.FWLConfig, *, segment_ids=None,
                         history=None, first_order=False):
    """Fast-weight logits by explicit gradient steps (the exactness property of DESIGN.md).

    ``history``: optional ``(h_prev, targets_prev, weights_prev)`` of earlier tokens of each
    row's first segment (what a carried state summarises). ``first_order`` holds the update
    constant (stop-gradient), as ``meta_gradient="first_order"`` does.
    """
    batch, length, _ = h.shape
    if segment_ids is None:
        segment_ids = jnp.zeros((batch, length), jnp.int32)
    fast = {name: params[name] for name in cfg.fast_update}
    eta = fwl.step_sizes(params)

    def token_losses(fast_params, hh, tt):
        logits = fwl.slow_logits({**params, **fast_params}, hh, cfg)
        logp = jax.nn.log_softmax(logits.astype(accumulation_dtype(logits.dtype)), axis=-1)
        return -jnp.take_along_axis(logp, tt[..., None], axis=-1)[..., 0]  # [B, T]

    def prefix_loss(fast_params, b, prefix_w, hist_w):
        loss = jnp.sum(prefix_w[b] * token_losses(fast_params, h[b : b + 1], targets[b : b + 1])[0])
        count = jnp.sum(prefix_w[b])
        if history is not None:
            h_prev, t_prev, w_prev = history
            hist = hist_w[b] * w_prev[b] * token_losses(fast_params, h_prev[b : b + 1], t_prev[b : b + 1])[0]
            loss, count = loss + jnp.sum(hist), count + hist_w[b] * jnp.sum(w_prev[b])
        if cfg.inner_loss_normalization == "prefix_mean":
            return loss / jnp.where(count > 0, count, 1)
        return cfg.inner_loss_scale * loss

    rows = []
    for b in range(batch):
        row = []
        for t in range(length):
            prefix_w, hist_w = _prefix_weights(weights, segment_ids, t)
            grads = jax.grad(prefix_loss)(fast, b, prefix_w, hist_w)
            if first_order:
                grads = jax.lax.stop_gradient(grads)
            updated = {**params, **{n: fast[n] - eta[n] * grads[n] for n in fast}}
            row.append(fwl.slow_logits(updated, h[b : b + 1, t : t + 1], cfg)[0, 0])
        rows.append(jnp.stack(row))
    return jnp.stack(rows)
