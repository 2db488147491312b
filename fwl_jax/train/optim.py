"""AdamW with warm-up and cosine / rsqrt decay, global-norm clipping, and a separate
learning-rate multiplier for the fast-weight step sizes (they live on another scale)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then the chosen decay."""
    peak, warmup = train.learning_rate, max(train.warmup_steps, 1)
    if train.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup, max(train.num_steps, warmup + 1),
            end_value=peak * train.min_lr_ratio)
    if train.schedule == "rsqrt":
        def rsqrt(step):
            step = jnp.asarray(step, jnp.float32)
            return peak * jnp.minimum(step / warmup, jnp.sqrt(warmup / jnp.maximum(step, 1.0)))
        return rsqrt
    return optax.linear_schedule(0.0, peak, warmup)


def is_step_size(path) -> bool:
    return any(getattr(k, "key", None) == "step_size_raw" for k in path)


def step_size_mask(params):
    """True at the fast-weight step sizes, False elsewhere."""
    return jax.tree_util.tree_map_with_path(lambda path, _: is_step_size(path), params)


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Clip -> AdamW (decay on matrices only) -> step-size updates times their multiplier."""
    parts = [optax.clip_by_global_norm(train.grad_clip)] if train.grad_clip > 0 else []
    parts.append(optax.adamw(learning_rate_schedule(train), b1=train.b1, b2=train.b2,
                             eps=train.eps, weight_decay=train.weight_decay,
                             mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
    parts.append(optax.masked(optax.scale(train.step_size_lr_mult), step_size_mask))
    return optax.chain(*parts)
