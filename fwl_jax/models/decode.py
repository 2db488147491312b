"""Incremental decoding: a KV cache for the body, the fast-weight state for the head.

Order of work at each new token x_t (the target of the position before it):
1. the previous position's gradient joins the fast-weight state (its target x_t is now known);
2. the body runs on x_t alone, reading and extending the KV cache, giving h_t;
3. the head gives position t's logits from the state of every earlier token.
Token by token this equals one ``model.apply`` over the whole sequence (tested).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fwl_jax.models.config import ModelConfig
from fwl_jax.models.transformer import TransformerLM, next_token_targets


class DecodeState(NamedTuple):
    cache: dict  # the body's KV cache (and its write index)
    fwl_state: dict | None  # the head's carried sums (None with fast weights off)
    h_last: jax.Array  # [B, d] hidden state of the last position, whose target is not yet known


def init_cache(model: TransformerLM, batch: int) -> dict:
    """An empty KV cache of length ``max_len`` for ``batch`` rows."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((batch, 1), jnp.int32), decode=True,
                                               method=TransformerLM.hidden))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def prefill(model: TransformerLM, variables: dict, prompt: jax.Array) -> tuple[jax.Array, DecodeState]:
    """Runs the prompt [B, P] through the model; returns the last position's logits [B, V]."""
    params = {"params": variables["params"]}
    cache = init_cache(model, prompt.shape[0])
    h, mutated = model.apply({**params, "cache": cache}, prompt, decode=True, method=TransformerLM.hidden,
                             mutable=["cache"])
    targets, weights = next_token_targets(prompt, None)  # the last target is still unknown
    logits, fwl_state = model.apply(params, h, targets, weights, None, None,
                                    method=lambda m, *a: m.head(*a))
    return logits[:, -1], DecodeState(mutated["cache"], fwl_state, h[:, -1])


def decode_step(model: TransformerLM, variables: dict, state: DecodeState,
                token: jax.Array) -> tuple[jax.Array, DecodeState]:
    """Feeds ``token`` [B] (the next token after the cached ones); returns its logits [B, V]."""
    params = {"params": variables["params"]}
    weight = jnp.ones(token.shape, jnp.float32)
    fwl_state = model.apply(params, state.fwl_state, state.h_last, token, weight,
                            method=TransformerLM.head_update)
    h, mutated = model.apply({**params, "cache": state.cache}, token[:, None], decode=True,
                             method=TransformerLM.hidden, mutable=["cache"])
    logits = model.apply(params, h[:, 0], fwl_state, method=TransformerLM.head_step)
    return logits, DecodeState(mutated["cache"], fwl_state, h[:, 0])


def sample(logits: jax.Array, rng: jax.Array, temperature: float, top_k: int | None,
           top_p: float | None) -> jax.Array:
    """One token per row from logits [B, V]: greedy at temperature 0, else top-k / nucleus sampling."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # keep the smallest set whose probability reaches top_p (always the most likely token)
        cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1)


def _check_generate_args(config, prompt_tokens, max_new_tokens, temperature, top_k, top_p):
    if prompt_tokens.ndim != 2 or prompt_tokens.shape[1] == 0:
        raise ValueError(f"prompt_tokens must have shape [B, P] with P >= 1, got {prompt_tokens.shape}")
    if not jnp.issubdtype(prompt_tokens.dtype, jnp.integer):
        raise ValueError(f"prompt_tokens must be integer token ids, got dtype {prompt_tokens.dtype}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    total = prompt_tokens.shape[1] + max_new_tokens
    if total > config.max_len:
        raise ValueError(f"prompt length {prompt_tokens.shape[1]} + max_new_tokens {max_new_tokens} = {total} "
                         f"exceeds the cache (ModelConfig.max_len={config.max_len})")
    if not isinstance(temperature, (int, float)) or temperature < 0 or temperature != temperature:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= config.vocab_size):
        raise ValueError(f"top_k must be an int in [1, vocab_size={config.vocab_size}], got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")


def generate(model: TransformerLM, variables: dict, prompt_tokens: jax.Array, *, max_new_tokens: int,
             rng: jax.Array, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             eos_id: int | None = None) -> jax.Array:
    """Samples ``max_new_tokens`` tokens [B, N] after ``prompt_tokens`` [B, P].

    Compiled once per (config, shapes, sampling settings). Rows that produced ``eos_id`` keep
    emitting it.
    """
    _check_generate_args(model.config, prompt_tokens, max_new_tokens, temperature, top_k, top_p)
    return _generate(model.config, max_new_tokens, float(temperature), top_k, top_p, eos_id,
                     {"params": variables["params"]}, prompt_tokens, rng)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _generate(config: ModelConfig, max_new_tokens, temperature, top_k, top_p, eos_id, variables, prompt, rng):
    model = TransformerLM(config)
    logits, state = prefill(model, variables, prompt)
    done = jnp.zeros(prompt.shape[:1], bool)

    def step(carry, step_rng):
        logits, state, done = carry
        token = sample(logits, step_rng, temperature, top_k, top_p)
        if eos_id is not None:
            token = jnp.where(done, eos_id, token)
            done = done | (token == eos_id)
        logits, state = decode_step(model, variables, state, token)
        return (logits, state, done), token

    _, tokens = jax.lax.scan(step, (logits, state, done), jax.random.split(rng, max_new_tokens))
    return tokens.T
