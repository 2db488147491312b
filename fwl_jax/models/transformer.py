"""TransformerLM: a decoder-only, pre-norm RoPE transformer body with the FWL head.

``model.apply(variables, tokens, *, targets=None, weights=None, segment_ids=None,
positions=None, fwl_state=None, deterministic=True) -> (logits, new_fwl_state)``, and
``method=TransformerLM.token_nll`` (same arguments) ``-> (nll [B, T], new_fwl_state)``: what
training and evaluation use, since it never forms the [B, T, V] logits.

Packed rows: tokens attend only within their own segment and positions restart at each
segment (derived from ``segment_ids`` when ``positions`` is None). The head is
:mod:`fwl_jax.ops.fwl`'s, under ``params['head']`` with exactly ``init_params``'s names;
with ``fwl_enabled=False`` it computes ``slow_logits`` from the same parameters, so a model
trained without fast weights is fine-tuned with them by flipping one flag.

When ``targets`` is None the fast-weight update uses the next token of the same segment
(the last position of a row, and the last of each segment, has no target).

Decoding (``decode=True``) keeps keys and values in a ``cache`` collection of length
``max_len`` and processes a block of tokens (a prompt, or one token) after those already in
the cache; see :mod:`fwl_jax.models.decode`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fwl_jax.models.attention import cached_attention, causal_attention
from fwl_jax.models.config import ModelConfig
from fwl_jax.ops import fwl as fwl_ops

_REMAT_POLICIES = {"full": None, "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _partitioned(init, axes):
    return nn.with_logical_partitioning(init, axes)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """[B, T] position of each token within its contiguous segment."""
    length = segment_ids.shape[1]
    index = jnp.arange(length)[None, :]
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                              segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


def next_token_targets(tokens, segment_ids):
    """Targets (the next token) and weights (0 at each segment's last position)."""
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    has_next = jnp.ones(tokens.shape, bool).at[:, -1].set(False)
    if segment_ids is not None:
        has_next = has_next.at[:, :-1].set(segment_ids[:, 1:] == segment_ids[:, :-1])
    return targets, has_next.astype(jnp.float32)


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary embedding of x [B, T, N, H] at positions [B, T] (rotate-half convention)."""
    half = x.shape[-1] // 2
    freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[..., None].astype(jnp.float32) * freq  # [B, T, H/2]
    sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class Norm(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        kwargs = dict(epsilon=self.cfg.norm_eps, dtype=self.cfg.compute_dtype, param_dtype=self.cfg.params_dtype)
        if self.cfg.norm_type == "rmsnorm":
            return nn.RMSNorm(scale_init=_partitioned(nn.initializers.ones, ("norm",)), **kwargs)(x)
        return nn.LayerNorm(scale_init=_partitioned(nn.initializers.ones, ("norm",)),
                            bias_init=_partitioned(nn.initializers.zeros, ("norm",)), **kwargs)(x)


class Dense(nn.Module):
    """x [..., *in] @ kernel [*in, *out] with a logically partitioned kernel (no bias).

    Written here rather than using ``nn.DenseGeneral`` because that initialises a flattened
    kernel, which a logical sharding constraint of the full rank cannot apply to.
    """

    cfg: ModelConfig
    features: tuple[int, ...]
    axes: tuple[str, ...]
    in_dims: int = 1

    @nn.compact
    def __call__(self, x):
        n_in, n_out = self.in_dims, len(self.features)
        init = nn.initializers.lecun_normal(in_axis=tuple(range(n_in)), out_axis=tuple(range(n_in, n_in + n_out)))
        shape = tuple(x.shape[-n_in:]) + tuple(self.features)
        kernel = self.param("kernel", _partitioned(init, self.axes), shape, self.cfg.params_dtype)
        dtype = self.cfg.compute_dtype
        return jnp.tensordot(x.astype(dtype), kernel.astype(dtype), axes=n_in)


def _dense(cfg, features, axes, name, in_dims=1):
    features = features if isinstance(features, tuple) else (features,)
    return Dense(cfg, features, axes, in_dims, name=name)


class Attention(nn.Module):
    cfg: ModelConfig
    decode: bool = False

    @nn.compact
    def __call__(self, x, positions, segment_ids):
        cfg = self.cfg
        q = _dense(cfg, (cfg.num_heads, cfg.head_dim), ("embed", "heads", "kv"), "query")(x)
        k = _dense(cfg, (cfg.num_kv_heads, cfg.head_dim), ("embed", "kv_heads", "kv"), "key")(x)
        v = _dense(cfg, (cfg.num_kv_heads, cfg.head_dim), ("embed", "kv_heads", "kv"), "value")(x)
        if self.decode:
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            positions = jnp.broadcast_to(index.value + jnp.arange(x.shape[1]), x.shape[:2])
        q, k = apply_rope(q, positions, cfg.rope_base), apply_rope(k, positions, cfg.rope_base)
        # cuDNN's partitioner refuses q, k and v sharded differently: all three are pinned.
        q, k, v = (nn.with_logical_constraint(x, ("batch", "length", "act_heads", "kv")) for x in (q, k, v))
        if self.decode:
            k, v, mask = self._update_cache(k, v, positions, index)
            # cuDNN where it applies (any attention_impl but "xla"; elsewhere XLA, whatever the
            # setting): differentiated with a mask, cuDNN needs both lengths even, so one token
            # at a time (decoding) and odd segments or prompts stay with XLA.
            even = x.shape[1] % 2 == 0 and cfg.max_len % 2 == 0
            cudnn = cfg.attention_impl != "xla" and _cudnn_applies(q) and even
            out = cached_attention(q, k, v, mask, index.value, "cudnn" if cudnn else "xla")
        else:
            out = self._attend(q, k, v, segment_ids)
        out = nn.with_logical_constraint(out, ("batch", "length", "act_heads", "kv"))
        return _dense(cfg, cfg.d_model, ("heads", "kv", "embed"), "out", in_dims=2)(out)

    def _attend(self, q, k, v, segment_ids):
        impl = self.cfg.attention_impl
        if impl == "auto":
            impl = "cudnn" if _cudnn_applies(q) else "xla"
        return causal_attention(q, k, v, segment_ids, impl)

    def _update_cache(self, k, v, positions, index):
        cfg = self.cfg
        shape = (k.shape[0], cfg.max_len, cfg.num_kv_heads, cfg.head_dim)
        cached_k = self.variable("cache", "cached_key", jnp.zeros, shape, k.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, shape, v.dtype)
        start = index.value
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, start, 0, 0))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, start, 0, 0))
        index.value = start + k.shape[1]
        mask = jnp.arange(cfg.max_len)[None, None, :] <= positions[:, :, None]  # [B, L, max_len]
        return cached_k.value, cached_v.value, mask[:, None]


def _cudnn_applies(q):
    """cuDNN fused attention: GPU, half precision, head dim a multiple of 8 up to 128. With
    packed segments it reads the mask as a bias, still about 4x XLA's masked attention on an
    H200 (docs/PERFORMANCE.md, bench/attention.py)."""
    return (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
            and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128)


# jax.checkpoint around the activation alone: the backward recomputes gelu's tanh (silu's
# sigmoid) from the matmul outputs, which it keeps anyway, rather than autodiff keeping one
# more [B, T, mlp_dim] array per block. Same values; at bench_ref that array is 96 MiB a
# layer (1.125 GiB less temporary memory, about 0.6 ms a step on an H100: docs/PERFORMANCE.md,
# session 14). Under a block remat policy the activation is recomputed already, so there the
# plain function is used (a second checkpoint would recompute it once more).
_gelu = jax.checkpoint(nn.gelu)
_swiglu = jax.checkpoint(lambda gate, up: nn.silu(gate) * up)


class Mlp(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        up = _dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "up")(x)
        recompute = cfg.remat == "none"  # else the block's remat recomputes the activation
        if cfg.mlp_type == "swiglu":
            gate = _dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "gate")(x)
            hidden = _swiglu(gate, up) if recompute else nn.silu(gate) * up
        else:
            hidden = _gelu(up) if recompute else nn.gelu(up)
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "act_mlp"))
        return _dense(cfg, cfg.d_model, ("mlp", "embed"), "down")(hidden)


class Block(nn.Module):
    """Pre-norm block; ``(x, positions, segment_ids) -> (x, None)`` so it can be scanned."""

    cfg: ModelConfig
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, x, positions, segment_ids):
        dropout = nn.Dropout(self.cfg.dropout_rate, deterministic=self.deterministic)
        y = Attention(self.cfg, self.decode, name="attention")(Norm(self.cfg, name="attention_norm")(x),
                                                               positions, segment_ids)
        x = x + dropout(y)
        x = x + dropout(Mlp(self.cfg, name="mlp")(Norm(self.cfg, name="mlp_norm")(x)))
        return nn.with_logical_constraint(x, ("batch", "length", "act_embed")), None


class Body(nn.Module):
    """Embedding, the blocks (scanned or unrolled, optionally rematerialised), final norm."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, segment_ids=None, positions=None, deterministic=True, decode=False):
        cfg = self.cfg
        if positions is None:
            positions = (jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape) if segment_ids is None
                         else segment_positions(segment_ids))
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
                         embedding_init=_partitioned(nn.initializers.normal(1.0), ("vocab", "embed")),
                         name="embed")
        x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(embed(tokens))
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        block = Block
        if cfg.remat != "none":
            block = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            stack = nn.scan(block, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True, "dropout": True},
                            in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = stack(cfg, deterministic, decode, name="layers")(x, positions, segment_ids)
        else:
            for i in range(cfg.num_layers):
                x, _ = block(cfg, deterministic, decode, name=f"layers_{i}")(x, positions, segment_ids)
        return Norm(cfg, name="final_norm")(x)


class StepSizes(nn.Module):
    """The six raw step sizes (scalars, replicated); the step size is softplus(raw)."""

    cfg: ModelConfig

    def setup(self):
        raw = fwl_ops.inverse_softplus(self.cfg.fwl.step_size_init)
        init = _partitioned(lambda key, shape, dtype: jnp.full(shape, raw, dtype), ())
        self.raw = {n: self.param(n, init, (), self.cfg.params_dtype) for n in fwl_ops.FAST_TENSORS}


class FWLHead(nn.Module):
    """Linen wrapper of the pure head: parameters named exactly as ``fwl.init_params``."""

    cfg: ModelConfig

    def setup(self):
        cfg, fc = self.cfg, self.cfg.fwl
        d, m, s, v = cfg.d_model, fc.hidden, fc.size, fc.vocab_size
        kernel, zeros, ones = nn.initializers.lecun_normal(), nn.initializers.zeros, nn.initializers.ones
        specs = {"W1": (kernel, (d, m), ("embed", "mlp")), "b1": (zeros, (m,), ("mlp",)),
                 "W2": (kernel, (m, s), ("mlp", "embed")), "b2": (zeros, (s,), ("norm",)),
                 "ln_scale": (ones, (s,), ("norm",)), "ln_bias": (zeros, (s,), ("norm",)),
                 "unembed": (kernel, (s, v), ("embed", "vocab")), "unembed_bias": (zeros, (v,), ("vocab",))}
        self.weights = {n: self.param(n, _partitioned(init, axes), shape, cfg.params_dtype)
                        for n, (init, shape, axes) in specs.items()}
        self.step_size_raw = StepSizes(cfg)

    def head_params(self) -> dict:
        return {**self.weights, "step_size_raw": self.step_size_raw.raw}

    def __call__(self, h, targets, weights, segment_ids, state):
        if not self.cfg.fwl_enabled:
            return self._logits(fwl_ops.slow_logits(self.head_params(), h, self.cfg.fwl)), state
        logits, state = fwl_ops.fwl_logits(self.head_params(), h, targets, weights, self.cfg.fwl,
                                           segment_ids=segment_ids, state=state)
        return self._logits(logits), state

    def token_nll(self, h, targets, weights, segment_ids, state):
        """Per-position cross-entropy [B, T] of the logits (never formed whole), and the state."""
        if not self.cfg.fwl_enabled:
            return fwl_ops.slow_token_nll(self.head_params(), h, targets, self.cfg.fwl), state
        return fwl_ops.fwl_token_nll(self.head_params(), h, targets, weights, self.cfg.fwl,
                                     segment_ids=segment_ids, state=state)

    def step(self, h_t, state):
        """Logits [B, V] of one position from the state of all tokens before it."""
        if not self.cfg.fwl_enabled:
            return fwl_ops.slow_logits(self.head_params(), h_t, self.cfg.fwl)
        return fwl_ops.fwl_logits_step(self.head_params(), state, h_t, self.cfg.fwl)

    def update(self, state, h_t, target_t, weight_t):
        """The state after one more token whose target is now known."""
        if not self.cfg.fwl_enabled:
            return state
        return fwl_ops.update_state(self.head_params(), state, h_t, target_t, weight_t, self.cfg.fwl)

    @staticmethod
    def _logits(logits):
        return nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))


class TransformerLM(nn.Module):
    config: ModelConfig

    def setup(self):
        self.body = Body(self.config)
        self.head = FWLHead(self.config)

    def __call__(self, tokens, *, targets=None, weights=None, segment_ids=None, positions=None,
                 fwl_state=None, deterministic=True, decode=False):
        h, targets, weights = self._body(tokens, targets, weights, segment_ids, positions,
                                         deterministic, decode)
        return self.head(h, targets, weights, segment_ids, fwl_state)

    def token_nll(self, tokens, *, targets=None, weights=None, segment_ids=None, positions=None,
                  fwl_state=None, deterministic=True):
        """``(nll [B, T], new_fwl_state)``: the cross-entropy of every position's target (same
        arguments as ``__call__``), computed in vocabulary chunks without [B, T, V] logits."""
        h, targets, weights = self._body(tokens, targets, weights, segment_ids, positions,
                                         deterministic, False)
        return self.head.token_nll(h, targets, weights, segment_ids, fwl_state)

    def _body(self, tokens, targets, weights, segment_ids, positions, deterministic, decode):
        _check_tokens(tokens, segment_ids, positions, self.config)
        h = self.body(tokens, segment_ids, positions, deterministic, decode)
        if targets is None:
            targets, default_weights = next_token_targets(tokens, segment_ids)
            weights = default_weights if weights is None else weights
        elif weights is None:
            weights = jnp.ones(tokens.shape, jnp.float32)
        return h, targets, weights

    def hidden(self, tokens, *, segment_ids=None, positions=None, deterministic=True, decode=False):
        """The body's final hidden states h [B, T, d] (the head's input)."""
        _check_tokens(tokens, segment_ids, positions, self.config)
        return self.body(tokens, segment_ids, positions, deterministic, decode)

    def head_step(self, h_t, fwl_state):
        return self.head.step(h_t, fwl_state)

    def head_update(self, fwl_state, h_t, target_t, weight_t):
        return self.head.update(fwl_state, h_t, target_t, weight_t)


def _check_tokens(tokens, segment_ids, positions, cfg):
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be an int array of shape [B, T], got {tokens.dtype} {tokens.shape}")
    if tokens.shape[1] > cfg.max_len:
        raise ValueError(f"tokens has length {tokens.shape[1]} > ModelConfig.max_len={cfg.max_len}")
    for name, x in (("segment_ids", segment_ids), ("positions", positions)):
        if x is not None and x.shape != tokens.shape:
            raise ValueError(f"{name} must have the shape of tokens {tokens.shape}, got {x.shape}")


def stack_layers(params: dict, num_layers: int) -> dict:
    """Unrolled body parameters (``layers_0`` ...) -> the ``scan_layers`` layout (``layers``)."""
    body = dict(params["body"])
    layers = [body.pop(f"layers_{i}") for i in range(num_layers)]
    body["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return {**params, "body": body}


def unstack_layers(params: dict, num_layers: int) -> dict:
    """The ``scan_layers`` layout -> unrolled body parameters."""
    body = dict(params["body"])
    stacked = body.pop("layers")
    for i in range(num_layers):
        body[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return {**params, "body": body}
