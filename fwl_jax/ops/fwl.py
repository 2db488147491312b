"""The Fast Weight Layer head as pure functions (DESIGN.md section 1).

Slow head: ``z1 = h W1 + b1; a = relu(z1)^2; z2 = a W2 + b2; n = LN(z2);
u = g n + bt; logits = u U + c`` with ``g, bt`` = ``ln_scale, ln_bias`` and
``U, c`` = ``unembed, unembed_bias``.

Fast head: at position t every fast tensor is replaced by
``theta - eta_theta * grad_theta sum_{i in P(t)} L_i`` where ``P(t)`` is the strictly earlier
part of t's segment (plus the carried state in the row's first segment) and
``L_i = inner_loss_scale * w_i * CE(logits_i, target_i)`` is the slow head's token loss.
The per-token gradients are analytic (``e_i = scale w_i (softmax_i - onehot_i)``,
``du = e U^T``, ``dg = du n``, ``dbt = du``, ``dz2 = LN'(du g)``, ``da = dz2 W2^T``,
``dz1 = 2 da relu(z1)``); the kernel gradients are rank one (``h_i (x) dz1_i``,
``a_i (x) dz2_i``), so applying the summed update to the fast-pass input of a layer is causal
linear attention with query = that input, key = the slow-pass input, value = the output
gradient. Bias, gain and LN-bias updates are segmented prefix sums (linear attention with
unit queries and keys). Nothing per-token of weight size is ever materialised. The
vocabulary-sized parts (``du = e U^T`` and the final cross-entropy of :func:`fwl_token_nll`)
run in chunks of ``unembed_chunk`` positions with hand-written VJPs (:mod:`fwl_jax.ops.unembed`).

With ``inner_loss_normalization="prefix_mean"`` position t's inner loss is the weighted mean
``sum_{i in P(t)} w_i CE_i / sum_{i in P(t)} w_i`` (carried tokens counted), so the step does
not grow with the length of the history; ``inner_loss_scale`` is then not used.

The carried state (and the decoder's state) holds, per row, the sums the fast pass needs:
``W1: [B, d, m] = sum h_i (x) dz1_i``, ``b1: [B, m]``, ``W2: [B, m, s] = sum a_i (x) dz2_i``,
``b2, ln_scale, ln_bias: [B, s]`` (only for tensors in ``fast_update``) and
``count: [B]``, the summed weights of the tokens it holds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from fwl_jax.ops import unembed
from fwl_jax.ops.linear_attention import METHODS, accumulation_dtype, causal_linear_attention, mixed_einsum

FAST_TENSORS = ("W1", "b1", "W2", "b2", "ln_scale", "ln_bias")
VECTOR_TENSORS = ("b1", "b2", "ln_scale", "ln_bias")  # updated by plain prefix sums
META_GRADIENTS = ("full", "first_order")
NORMALIZATIONS = ("sum", "prefix_mean")


@dataclasses.dataclass(frozen=True)
class FWLConfig:
    """Settings of the fast-weight head (hashable, so it can be a static jit argument)."""

    size: int  # s, width of the head's output before the unembedding
    vocab_size: int  # V
    inner_loss_scale: float  # constant factor of the inner loss (1 / training sequence length)
    hidden_mult: int = 4  # m = hidden_mult * size
    step_size_init: float = 0.01  # initial value of every learned step size (eta)
    meta_gradient: str = "full"  # "full" (second order) or "first_order" (update held constant)
    attention_method: str = "auto"  # causal_linear_attention method
    chunk_size: int = 0  # tokens per chunk for the chunked attention method (0: chosen with it)
    attention_mixed_precision: bool = True  # scores x values, queries x states in the compute dtype
    ln_eps: float = 1e-6  # LayerNorm epsilon: (z - mean) / sqrt(var + ln_eps)
    fast_update: tuple[str, ...] = FAST_TENSORS  # tensors that take the per-position step
    inner_loss_normalization: str = "sum"  # "sum" (scaled) or "prefix_mean"
    unembed_chunk: int = 256  # positions per chunk of the vocabulary-sized work (0: whole window;
    # the chunks are unrolled, so compile time grows with T / unembed_chunk)
    gradient_chunk: int = 0  # positions per chunk of the per-token gradient e U^T, whose backward
    # holds the most [B, chunk, V] arrays at once (0: unembed_chunk)

    def __post_init__(self):
        object.__setattr__(self, "fast_update", tuple(self.fast_update))
        for name in ("size", "vocab_size", "hidden_mult"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FWLConfig.{name} must be a positive int, got {value!r}")
        for name in ("chunk_size", "unembed_chunk", "gradient_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"FWLConfig.{name} must be an int >= 0, got {value!r}")
        for name in ("inner_loss_scale", "step_size_init", "ln_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"FWLConfig.{name} must be a positive finite number, got {value!r}")
        if not isinstance(self.attention_mixed_precision, bool):
            raise ValueError("FWLConfig.attention_mixed_precision must be True or False, got "
                             f"{self.attention_mixed_precision!r}")
        choices = (("meta_gradient", META_GRADIENTS), ("attention_method", METHODS),
                   ("inner_loss_normalization", NORMALIZATIONS))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"FWLConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        unknown = sorted(set(self.fast_update) - set(FAST_TENSORS))
        if unknown:
            raise ValueError(f"FWLConfig.fast_update has unknown tensors {unknown}; choose from {FAST_TENSORS}")

    @property
    def hidden(self) -> int:
        """m, the width of the head's hidden layer."""
        return self.hidden_mult * self.size


def inverse_softplus(x: float) -> float:
    """The raw parameter whose softplus is ``x`` (> 0)."""
    return x + math.log(-math.expm1(-x))


def init_params(key: jax.Array, d_model: int, cfg: FWLConfig, dtype=jnp.float32) -> dict:
    """Head parameters: kernels LeCun-normal, biases zero, LN gain one, step sizes at init."""
    k1, k2, k3 = jax.random.split(key, 3)
    init = jax.nn.initializers.lecun_normal()
    s, m, v = cfg.size, cfg.hidden, cfg.vocab_size
    raw = jnp.asarray(inverse_softplus(cfg.step_size_init), dtype)
    return {
        "W1": init(k1, (d_model, m), dtype),
        "b1": jnp.zeros((m,), dtype),
        "W2": init(k2, (m, s), dtype),
        "b2": jnp.zeros((s,), dtype),
        "ln_scale": jnp.ones((s,), dtype),
        "ln_bias": jnp.zeros((s,), dtype),
        "unembed": init(k3, (s, v), dtype),
        "unembed_bias": jnp.zeros((v,), dtype),
        "step_size_raw": {name: raw for name in FAST_TENSORS},
    }


def step_sizes(params: dict) -> dict:
    """The positive step sizes ``eta = softplus(step_size_raw)``, one scalar per fast tensor."""
    return {name: jax.nn.softplus(raw) for name, raw in params["step_size_raw"].items()}


def state_shapes(batch: int, d_model: int, cfg: FWLConfig) -> dict:
    """Shape of every entry of the carried state."""
    s, m = cfg.size, cfg.hidden
    full = {"W1": (batch, d_model, m), "b1": (batch, m), "W2": (batch, m, s), "b2": (batch, s),
            "ln_scale": (batch, s), "ln_bias": (batch, s)}
    return {**{n: full[n] for n in cfg.fast_update}, "count": (batch,)}


def init_state(batch: int, d_model: int, cfg: FWLConfig, dtype=jnp.float32) -> dict:
    """An empty carried state (no tokens seen)."""
    return {name: jnp.zeros(shape, dtype) for name, shape in state_shapes(batch, d_model, cfg).items()}


# ----------------------------------------------------------------------------- forward

def _dense(x, w, acc):
    """``x @ w`` in the compute dtype of x, accumulated in ``acc``; in bfloat16 the backward's
    matmuls run in bfloat16 too (:func:`mixed_einsum`)."""
    return mixed_einsum("...i,ij->...j", x, w.astype(x.dtype), acc)


def _layer_norm(z, eps):
    mean = jnp.mean(z, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(z - mean), axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(var + eps)
    return (z - mean) * rstd, rstd


Prefix = Callable[[str, jax.Array], jax.Array]


Linear = Callable[[str, jax.Array, jax.Array], jax.Array]


def _forward(params, h, cfg: FWLConfig, prefix: Prefix | None = None, linear: Linear | None = None):
    """The head up to the unembedding, slow (``prefix`` None) or fast.

    Returns ``u`` [..., s] in h's dtype (the unembedding's input) and the intermediates.
    ``prefix(name, query)`` gives the summed gradient of tensor ``name`` applied to the
    layer's fast-pass input ``query`` (kernels) or the summed gradient itself (vectors).
    ``linear(name, x, kernel)``, if given, replaces ``x @ kernel`` for ``W1`` and ``W2``.
    """
    acc = accumulation_dtype(h.dtype)
    eta = step_sizes(params)
    dense = linear or (lambda name, x, w: _dense(x, w, acc))

    def updated(name, value, query=None):
        if prefix is None or name not in cfg.fast_update:
            return value
        return value - eta[name].astype(acc) * prefix(name, query)

    z1 = updated("W1", dense("W1", h, params["W1"]), h) + updated("b1", params["b1"].astype(acc))
    relu1 = jax.nn.relu(z1)
    a = jnp.square(relu1)
    a_in = a.astype(h.dtype)
    z2 = updated("W2", dense("W2", a_in, params["W2"]), a_in) + updated("b2", params["b2"].astype(acc))
    n, rstd = _layer_norm(z2, cfg.ln_eps)
    g = updated("ln_scale", params["ln_scale"].astype(acc))
    u = g * n + updated("ln_bias", params["ln_bias"].astype(acc))
    return u.astype(h.dtype), {"relu1": relu1, "a": a_in, "n": n, "rstd": rstd}


def slow_logits(params: dict, h: jax.Array, cfg: FWLConfig) -> jax.Array:
    """The ordinary head: [..., d] -> [..., V] logits (at least float32)."""
    return unembed.logits(_forward(params, h, cfg)[0], params["unembed"], params["unembed_bias"])


def slow_features(params: dict, h: jax.Array, cfg: FWLConfig, linear: Linear | None = None) -> jax.Array:
    """The ordinary head's input to the unembedding, ``u`` [..., s] in h's dtype (see
    ``_forward`` for ``linear``)."""
    return _forward(params, h, cfg, linear=linear)[0]


def slow_token_nll(params: dict, h: jax.Array, targets: jax.Array, cfg: FWLConfig) -> jax.Array:
    """The ordinary head's per-position cross-entropy [B, T] (float32 or wider), computed in
    chunks of ``cfg.unembed_chunk`` positions without materialising [B, T, V] logits."""
    if h.ndim != 3 or targets.shape != h.shape[:2]:
        raise ValueError(f"h must be [B, T, d] and targets [B, T], got {h.shape} and {targets.shape}")
    _check_concrete_targets(targets, cfg.vocab_size)
    u, _ = _forward(params, h, cfg)
    return unembed.token_nll(u, params["unembed"], params["unembed_bias"], targets, chunk=cfg.unembed_chunk)


def _token_gradients(params, h, targets, weights, cfg: FWLConfig):
    """The keys and values of every fast tensor's per-token gradient (slow pass)."""
    acc = accumulation_dtype(h.dtype)
    u, mid = _forward(params, h, cfg)
    coef = weights.astype(acc)
    if cfg.inner_loss_normalization == "sum":
        coef = coef * cfg.inner_loss_scale
    du = unembed.softmax_gradient(u, params["unembed"], params["unembed_bias"], targets, coef,
                                  chunk=cfg.gradient_chunk or cfg.unembed_chunk)  # [B, T, s]
    n, rstd = mid["n"], mid["rstd"]
    dn = du * params["ln_scale"].astype(acc)
    dz2 = rstd * (dn - jnp.mean(dn, -1, keepdims=True) - n * jnp.mean(dn * n, -1, keepdims=True))
    da = mixed_einsum("...s,ms->...m", dz2.astype(h.dtype), params["W2"].astype(h.dtype), acc)
    dz1 = 2.0 * da * mid["relu1"]
    values = {"W1": dz1, "b1": dz1, "W2": dz2, "b2": dz2, "ln_scale": du * n, "ln_bias": du}
    keys = {"W1": h, "W2": mid["a"]}
    return keys, values


# ----------------------------------------------------------------------------- checks

def _check_concrete_targets(targets, vocab_size):
    if isinstance(targets, jax.core.Tracer):
        return  # values unknown under tracing; checked when called eagerly
    with jax.ensure_compile_time_eval():  # concrete targets closed over by a traced function
        lo, hi = int(jnp.min(targets)), int(jnp.max(targets))
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"targets must lie in [0, vocab_size={vocab_size}), got values in [{lo}, {hi}]")


def _check_head_inputs(params, h, targets, weights, cfg, segment_ids, state):
    if h.ndim != 3 or h.shape[-1] != params["W1"].shape[0]:
        raise ValueError(f"h must have shape [B, T, d_model={params['W1'].shape[0]}], got {h.shape}")
    if not jnp.issubdtype(h.dtype, jnp.floating):
        raise ValueError(f"h must be floating-point, got dtype {h.dtype}")
    bt = h.shape[:2]
    for name, x, kind in (("targets", targets, jnp.integer), ("weights", weights, None),
                          ("segment_ids", segment_ids, jnp.integer)):
        if x is None:
            continue
        if x.shape != bt:
            raise ValueError(f"{name} must have shape [B, T] = {bt}, got {x.shape}")
        if kind is not None and not jnp.issubdtype(x.dtype, kind):
            raise ValueError(f"{name} must be an integer array, got dtype {x.dtype}")
    if not (jnp.issubdtype(weights.dtype, jnp.floating) or weights.dtype == jnp.bool_):
        raise ValueError(f"weights must be floating-point or bool, got dtype {weights.dtype}")
    _check_concrete_targets(targets, cfg.vocab_size)
    if state is not None:
        _check_state(state, state_shapes(bt[0], h.shape[-1], cfg))


def _check_state(state, shapes):
    if not isinstance(state, dict) or set(state) != set(shapes):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state must be a dict with keys {sorted(shapes)} (see init_state), got {got}")
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(f"state[{name!r}] must have shape {shape}, got {tuple(state[name].shape)}")


# ----------------------------------------------------------------------------- fast head

def fwl_logits(params: dict, h: jax.Array, targets: jax.Array, weights: jax.Array, cfg: FWLConfig,
               *, segment_ids: jax.Array | None = None,
               state: dict | None = None) -> tuple[jax.Array, dict]:
    """Fast-weight logits for a window, and the carried state after it.

    Args:
      params: from :func:`init_params`.
      h: [B, T, d] body outputs (its dtype is the matmul compute dtype).
      targets: [B, T] int next tokens; weights: [B, T] (0 where there is no target).
      segment_ids: [B, T] int (packed documents) or None.
      state: carried sums of the row's first segment (:func:`init_state`) or None (empty).

    Returns:
      logits [B, T, V] (at least float32) and the state of each row's last segment.
    """
    u, new_state = _fast_output(params, h, targets, weights, cfg, segment_ids, state)
    return unembed.logits(u, params["unembed"], params["unembed_bias"]), new_state


def fwl_token_nll(params: dict, h: jax.Array, targets: jax.Array, weights: jax.Array, cfg: FWLConfig,
                  *, segment_ids: jax.Array | None = None,
                  state: dict | None = None) -> tuple[jax.Array, dict]:
    """Per-position cross-entropy [B, T] of :func:`fwl_logits` (same arguments) and the new
    state, computed in chunks of ``cfg.unembed_chunk`` positions: no [B, T, V] array is formed."""
    u, new_state = _fast_output(params, h, targets, weights, cfg, segment_ids, state)
    nll = unembed.token_nll(u, params["unembed"], params["unembed_bias"], targets, chunk=cfg.unembed_chunk)
    return nll, new_state


def _fast_output(params, h, targets, weights, cfg, segment_ids, state):
    """The fast head's unembedding input u [B, T, s] and the new carried state."""
    _check_head_inputs(params, h, targets, weights, cfg, segment_ids, state)
    acc = accumulation_dtype(h.dtype)
    slow_in = (params, h)
    if cfg.meta_gradient == "first_order":  # the update is a constant: no backward through it
        slow_in = jax.lax.stop_gradient(slow_in)
    keys, values = _token_gradients(*slow_in, targets, weights, cfg)
    weights = weights.astype(acc)
    attend = lambda q, k, v, s0: causal_linear_attention(  # noqa: E731
        q, k, v, segment_ids=segment_ids, initial_state=s0, method=cfg.attention_method,
        chunk_size=cfg.chunk_size, mixed_precision=cfg.attention_mixed_precision)
    carried = lambda name: None if state is None else state[name].astype(acc)  # noqa: E731

    # One segmented prefix sum for every vector tensor, and one for the weight count. (The
    # count is kept out of the concatenation: a width-1 piece beside the 256-wide ones made
    # XLA's Triton fusion of the concatenate fail on an H200, see docs/PERFORMANCE.md.)
    ones = jnp.ones(h.shape[:2] + (1,), acc)
    count_s0 = None if state is None else carried("count")[:, None, None]
    count_sums, count_final = attend(ones, ones, weights[..., None], count_s0)
    sums, new_state = {"count": count_sums}, {"count": count_final[:, 0, 0]}
    vectors = [n for n in VECTOR_TENSORS if n in cfg.fast_update]
    if vectors:
        widths = [values[n].shape[-1] for n in vectors]
        split_at = [sum(widths[: i + 1]) for i in range(len(widths) - 1)]
        s0 = None if state is None else jnp.concatenate(
            [carried(n) for n in vectors], axis=-1)[:, None, :]
        vector_sums, final = attend(ones, ones, jnp.concatenate(
            [values[n] for n in vectors], axis=-1), s0)
        sums.update(zip(vectors, jnp.split(vector_sums, split_at, axis=-1)))
        new_state.update(zip(vectors, jnp.split(final[:, 0], split_at, axis=-1)))
    divisor = _divisor(sums["count"][..., 0], cfg)

    def prefix(name, query):
        # Kernel terms need the fast-pass query, so they run inside _forward; their final
        # states are recorded in new_state as they are computed.
        if name in VECTOR_TENSORS:
            return sums[name] / divisor
        key = keys[name].astype(query.dtype)
        out, new_state[name] = attend(query, key, values[name].astype(query.dtype), carried(name))
        return out / divisor

    u, _ = _forward(params, h, cfg, prefix)
    return u, new_state


def _divisor(count, cfg):
    """[..., 1] what each position's summed gradient is divided by (1, or the prefix count)."""
    if cfg.inner_loss_normalization == "sum":
        return jnp.ones_like(count)[..., None]
    return jnp.where(count > 0, count, 1)[..., None]


# ----------------------------------------------------------------------------- decoding

def update_state(params: dict, state: dict, h_t: jax.Array, target_t: jax.Array, weight_t: jax.Array,
                 cfg: FWLConfig) -> dict:
    """Adds one token's gradient to the state: h_t [B, d], target_t [B] int, weight_t [B]."""
    _check_head_inputs(params, h_t[:, None], target_t[:, None], weight_t[:, None], cfg, None, state)
    acc = accumulation_dtype(h_t.dtype)
    keys, values = _token_gradients(params, h_t[:, None], target_t[:, None], weight_t[:, None], cfg)
    new = {"count": state["count"] + weight_t.astype(state["count"].dtype)}
    for name in cfg.fast_update:
        if name in VECTOR_TENSORS:
            increment = values[name][:, 0]
        else:
            increment = jnp.einsum("bk,bv->bkv", keys[name][:, 0], values[name][:, 0], preferred_element_type=acc)
        new[name] = state[name] + increment.astype(state[name].dtype)
    return new


def fwl_logits_step(params: dict, state: dict, h_t: jax.Array, cfg: FWLConfig) -> jax.Array:
    """One position's fast-weight logits [B, V] from the state of every token before it."""
    if h_t.ndim != 2:
        raise ValueError(f"h_t must have shape [B, d_model], got {h_t.shape}")
    _check_state(state, state_shapes(h_t.shape[0], h_t.shape[1], cfg))
    acc = accumulation_dtype(h_t.dtype)
    divisor = _divisor(state["count"].astype(acc), cfg)

    def prefix(name, query):
        s = state[name].astype(acc)
        if name in VECTOR_TENSORS:
            return s / divisor
        return jnp.einsum("bk,bkv->bv", query, s.astype(query.dtype), preferred_element_type=acc) / divisor

    return unembed.logits(_forward(params, h_t, cfg, prefix)[0], params["unembed"], params["unembed_bias"])
