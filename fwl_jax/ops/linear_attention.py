"""Strictly causal, segment-aware linear attention.

For every row b and position t (``r_t`` is the index of the contiguous run of equal
``segment_ids`` that t lies in; the first run of a row has index 0)::

    out_t       = sum_{i < t, r_i == r_t} (q_t . k_i) v_i  +  [r_t == 0] q_t S0
    final_state = [r_{T-1} == 0] S0  +  sum_{i : r_i == r_{T-1}} k_i (x) v_i

``S0`` is ``initial_state`` (zero when None): the sums carried over from an earlier
window, which belong to the row's first segment only. ``final_state`` is the state of the
row's last segment, its last token included, ready to be passed on to the next window.
Segment ids label contiguous runs, as the packing pipeline writes them: an id that comes
back after a different one starts a new segment.

Methods (all exact; they differ only in cost):

* ``quadratic``: the masked [T, T] score matrix. ``2 B T^2 (Dk + Dv)`` FLOPs, ``B T^2``
  memory; cheapest when T is below about ``2 Dk Dv / (Dk + Dv)``.
* ``chunked``: split T into N chunks of C tokens (the last one padded). Within a chunk the
  masked quadratic form gives the intra-chunk part. Each chunk c summarises its last
  segment as ``D_c = sum_{i in c, r_i == r_end(c)} k_i (x) v_i`` and says whether a
  segment starts inside it (``keep_c = 0``) or not (``keep_c = 1``). The state after
  chunk c is the segmented sum ``S_c = keep_c S_{c-1} + D_c``, ``S_{-1} = S0``, and
  position t of chunk c adds ``q_t S_{c-1}`` when no boundary lies between the chunk's
  start and t. Together these are exactly the sum above split into "same chunk" and
  "earlier chunks", since a run that reaches back over a chunk edge carries all of its
  earlier tokens in ``S_{c-1}`` and nothing else (a reset drops whatever came before).
  The recurrence ``S_c = keep_c S_{c-1} + D_c`` is combined in one of two ways:

  - ``associative``: ``jax.lax.associative_scan`` over ``(keep, D)`` pairs with
    ``(k1, D1) o (k2, D2) = (k1 k2, k2 D1 + D2)``: log N parallel depth, but all N chunk
    states ``[B, N, Dk, Dv]`` live at once. Used when they are small.
  - ``scan``: a ``jax.lax.scan`` over chunks that carries one state and computes each
    chunk's output inside the loop: N sequential steps, one live state in the forward
    pass. Used when the N states would not fit the memory budget (long sequences with
    large Dk*Dv, as in long-document evaluation).

  ``chunk_combine="auto"`` picks between them, and ``chunk_size=0`` picks C, with
  :func:`estimate_cost`. Large states favour large chunks (fewer states to move, and the
  work becomes large matmuls): at T=8192, Dk=768, Dv=3072 chunks of 1,024 (auto's pick)
  run 2.5x faster than the quadratic form and 3.6x faster than chunks of 64 on an H200.
* ``recurrent``: a ``jax.lax.scan`` over tokens; the reference and the decoder's form.
* ``auto``: the cheapest of the above (and its chunk size) by :func:`estimate_cost`.

Inputs may be bfloat16; every product is accumulated and every state is kept in at least
float32 (float64 inputs stay float64). ``out`` and ``final_state`` are returned in that
accumulation dtype, so sums are never rounded to the input precision. With
``mixed_precision=True`` (the default) and bfloat16 inputs, the second products, masked
scores times values and queries times carried states, take their operands in bfloat16, as
flash attention does with its probabilities, and the backward's matmuls take their
cotangents in it too: every matmul runs in bfloat16 (with a float32 accumulator), while the
states and the sums stay in float32. ``False`` keeps the second products' operands, and so
the backward's matmuls, in the accumulation dtype. For float32 or wider inputs the two are
the same, and float16 inputs always keep float32 operands (scores and states are unbounded
and would overflow float16's range).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

METHODS = ("quadratic", "chunked", "recurrent", "auto")
CHUNK_COMBINES = ("associative", "scan", "auto")

# Rates of a current accelerator, used only to rank methods against each other. Fitted to
# the times of every method (chunks of 64 to 1,024) over bench/linear_attention.py's grid on
# an H200 (docs/PERFORMANCE.md): forward times for the rates, and the ranking of forward +
# backward times, overall, among chunked options and between the two combines at each
# chunk size, each within 1% of the fastest (tests/test_linear_attention.py checks it on
# the recorded data).
_FLOP_RATE = 5e14  # achievable matmul FLOP/s
_BYTE_RATE = 2e12  # achievable memory bytes/s
_STEP_LATENCY = 1e-5  # seconds per sequential step (a level of the associative scan, a token)
_CHUNK_STEP_LATENCY = 3e-5  # seconds per chunk of the sequential chunk scan (several kernels)
_ASSOCIATIVE_PASSES = 3  # times the associative scan's programme moves all N chunk states
_SCAN_PASSES = 3  # times the sequential chunk scan moves a state per chunk
CHUNK_SIZES = (32, 64, 128, 256, 512, 1024)  # what chunk_size=0 ("auto") chooses from
MEMORY_BUDGET_BYTES = 2 * 2**30  # temporaries above this rule a method out when another fits


def accumulation_dtype(*dtypes) -> jnp.dtype:
    """At least float32: the dtype sums and states are kept in."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


def segment_runs(segment_ids: jax.Array | None, batch: int, length: int) -> jax.Array:
    """[B, T] int32 index of the contiguous run of equal ids each position lies in (from 0)."""
    if segment_ids is None:
        return jnp.zeros((batch, length), jnp.int32)
    changes = (segment_ids[:, 1:] != segment_ids[:, :-1]).astype(jnp.int32)
    return jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), jnp.cumsum(changes, axis=1)], axis=1)


@dataclasses.dataclass(frozen=True)
class Cost:
    """Estimated cost of one forward call: FLOPs, bytes moved, sequential steps, peak temporaries."""

    flops: float
    bytes_moved: float
    steps: int
    memory_bytes: float
    step_latency: float = _STEP_LATENCY  # seconds a step

    @property
    def seconds(self) -> float:
        return self.flops / _FLOP_RATE + self.bytes_moved / _BYTE_RATE + self.steps * self.step_latency


def attention_flops(method: str, batch: int, length: int, dk: int, dv: int, chunk_size: int, *,
                    initial_state: bool = True, final_state: bool = True) -> float:
    """Multiply-add FLOPs (2 per product) of one forward call as each method computes it.

    quadratic: ``2 B T^2 (Dk + Dv)`` for the dense masked scores and their product with v.
    chunked (N = ceil(T / C) chunks, padded to N C tokens): ``2 B N C^2 (Dk + Dv)`` within
    chunks, ``2 B N C Dk Dv`` for the chunk summaries (the last of which is the final
    state) and as much again for the inter-chunk products. recurrent: ``2 B T Dk Dv`` for
    the outputs and as much for the running state. The initial-state term ``q S0`` and the
    final state cost ``2 B T Dk Dv`` each where a method computes them separately.
    """
    b, t, c = batch, length, chunk_size
    per_token_state = 2.0 * b * t * dk * dv
    if method == "quadratic":
        return 2.0 * b * t * t * (dk + dv) + per_token_state * (initial_state + final_state)
    if method == "chunked":
        padded = -(-t // c) * c
        return 2.0 * b * padded * c * (dk + dv) + 2 * 2.0 * b * padded * dk * dv
    if method == "recurrent":
        return 2 * per_token_state
    raise ValueError(f"method must be one of {METHODS[:3]}, got {method!r}")


def query_backward_flops(method: str, batch: int, length: int, dk: int, dv: int, chunk_size: int) -> float:
    """Multiply-add FLOPs of the backward for the queries alone, with the keys, values and
    initial state constants (the FWL's `first_order` meta-gradient): the forward's products
    against the values and the states again (``dq = (g v^T masked) k + g S^T``), without the
    forward's chunk summaries or running state, which need no gradient; no final state."""
    b, t, c = batch, length, chunk_size
    if method == "quadratic":
        return 2.0 * b * t * t * (dk + dv)
    if method == "chunked":
        padded = -(-t // c) * c
        return 2.0 * b * padded * c * (dk + dv) + 2.0 * b * padded * dk * dv
    if method == "recurrent":
        return 2.0 * b * t * dk * dv
    raise ValueError(f"method must be one of {METHODS[:3]}, got {method!r}")


def estimate_cost(method: str, batch: int, length: int, dk: int, dv: int, chunk_size: int,
                  chunk_combine: str = "associative") -> Cost:
    """Cost model behind ``method="auto"`` (float32 intermediates, 4 bytes an element).

    FLOPs from :func:`attention_flops` (initial and final state included). Bytes: inputs and
    outputs; for quadratic the [B, T, T] scores written and read; for chunked the [B, N, C, C]
    intra-chunk scores and the N chunk states (moved ``_ASSOCIATIVE_PASSES`` times by the
    associative scan, ``_SCAN_PASSES`` times by the sequential one, as fitted to measured
    times); for recurrent a [B, Dk, Dv] state read and written at every token. Steps: sequential
    kernel launches (1; ``2 log2 N + 1`` scan levels; N chunks, each costing
    ``_CHUNK_STEP_LATENCY``; T tokens).
    """
    b, t, c = batch, length, chunk_size
    flops = attention_flops(method, b, t, dk, dv, c)
    io = 4.0 * b * t * (2 * dk + 2 * dv)
    state = 4.0 * b * dk * dv
    if method == "quadratic":
        return Cost(flops, io + 3 * 4.0 * b * t * t, 1, 4.0 * b * t * t)
    if method == "chunked":
        n = -(-t // c)
        intra = 3 * 4.0 * b * n * c * c
        if chunk_combine == "associative":
            levels = max(1, math.ceil(math.log2(n))) if n > 1 else 1
            return Cost(flops, io + intra + _ASSOCIATIVE_PASSES * n * state, 2 * levels + 1, 3 * n * state)
        if chunk_combine == "scan":
            return Cost(flops, io + intra + _SCAN_PASSES * n * state, n, 3 * state + 4.0 * b * c * c,
                        _CHUNK_STEP_LATENCY)
        raise ValueError(f"chunk_combine must be one of {CHUNK_COMBINES[:2]}, got {chunk_combine!r}")
    return Cost(flops, io + 3 * t * state, t, 2 * state)


ALL_OPTIONS = (("quadratic", "associative"), ("chunked", "associative"), ("chunked", "scan"),
               ("recurrent", "associative"))


def chunk_sizes(length: int, chunk_size: int = 0) -> tuple[int, ...]:
    """The chunk sizes ``chunk_size`` stands for: itself, or for 0 ("auto") those of
    ``CHUNK_SIZES`` up to ``length`` (the smallest if none is)."""
    if chunk_size:
        return (chunk_size,)
    return tuple(c for c in CHUNK_SIZES if c <= length) or CHUNK_SIZES[:1]


def choose_method(batch: int, length: int, dk: int, dv: int, chunk_size: int = 0,
                  options=ALL_OPTIONS) -> tuple[str, str, int]:
    """The cheapest ``(method, chunk_combine, chunk_size)`` of ``options`` whose temporaries
    fit ``MEMORY_BUDGET_BYTES``; if none fits, the one with the least memory.

    ``chunk_size`` 0 lets the chunked method take each of :func:`chunk_sizes`; ``chunk_combine``
    and the returned chunk size only matter for ``chunked``.
    """
    candidates = [(m, comb, c) for m, comb in options
                  for c in (chunk_sizes(length, chunk_size) if m == "chunked" else (chunk_size,))]
    costs = {o: estimate_cost(o[0], batch, length, dk, dv, o[2] or CHUNK_SIZES[0], o[1]) for o in candidates}
    fitting = [o for o in candidates if costs[o].memory_bytes <= MEMORY_BUDGET_BYTES]
    if not fitting:
        return min(candidates, key=lambda o: costs[o].memory_bytes)
    return min(fitting, key=lambda o: costs[o].seconds)


def resolve(batch: int, length: int, dk: int, dv: int, method: str = "auto", chunk_size: int = 0,
            chunk_combine: str = "auto") -> tuple[str, str, int]:
    """What :func:`causal_linear_attention` runs for these arguments: ``(method,
    chunk_combine, chunk_size)`` with every "auto" (and a chunk size of 0) decided."""
    if method == "auto":
        return choose_method(batch, length, dk, dv, chunk_size)
    if method == "chunked":
        combines = CHUNK_COMBINES[:2] if chunk_combine == "auto" else (chunk_combine,)
        return choose_method(batch, length, dk, dv, chunk_size, [("chunked", c) for c in combines])
    return method, chunk_combine, chunk_size


def _check_inputs(q, k, v, segment_ids, initial_state, method, chunk_size, chunk_combine, mixed_precision):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 3:
            raise ValueError(f"{name} must have shape [B, T, D], got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape}, got {k.shape}")
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v must have shape [B, T, Dv] with B, T = {q.shape[:2]}, got {v.shape}")
    if segment_ids is not None:
        if segment_ids.shape != q.shape[:2]:
            raise ValueError(f"segment_ids must have shape [B, T] = {q.shape[:2]}, got {segment_ids.shape}")
        if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
            raise ValueError(f"segment_ids must be an integer array, got dtype {segment_ids.dtype}")
    if initial_state is not None:
        want = (q.shape[0], q.shape[2], v.shape[2])
        if initial_state.shape != want:
            raise ValueError(f"initial_state must have shape [B, Dk, Dv] = {want}, got {initial_state.shape}")
        if not jnp.issubdtype(initial_state.dtype, jnp.floating):
            raise ValueError(f"initial_state must be floating-point, got dtype {initial_state.dtype}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_combine not in CHUNK_COMBINES:
        raise ValueError(f"chunk_combine must be one of {CHUNK_COMBINES}, got {chunk_combine!r}")
    if not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"chunk_size must be an int >= 0 (0: chosen with the method), got {chunk_size!r}")
    if not isinstance(mixed_precision, bool):
        raise ValueError(f"mixed_precision must be True or False, got {mixed_precision!r}")


def causal_linear_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                            segment_ids: jax.Array | None = None,
                            initial_state: jax.Array | None = None,
                            method: str = "auto", chunk_size: int = 0,
                            chunk_combine: str = "auto",
                            mixed_precision: bool = True) -> tuple[jax.Array, jax.Array]:
    """Strictly causal linear attention (see the module docstring for the exact semantics).

    Args:
      q, k: [B, T, Dk] queries and keys.
      v: [B, T, Dv] values.
      segment_ids: [B, T] int, or None for one segment per row.
      initial_state: [B, Dk, Dv] carried state of the row's first segment, or None (zero).
      method: "quadratic", "chunked", "recurrent" or "auto".
      chunk_size: C, tokens per chunk for "chunked"; T need not be a multiple of it. 0 (the
        default) lets the cost model choose it from ``CHUNK_SIZES``.
      chunk_combine: for "chunked": "associative", "scan" or "auto".
      mixed_precision: with bfloat16 inputs, the second products (scores x values, queries x
        carried states) and the backward's matmuls take their operands in bfloat16 (True) or
        in the accumulation dtype (False).

    Returns:
      out: [B, T, Dv] and final_state: [B, Dk, Dv], both in the accumulation dtype.
    """
    _check_inputs(q, k, v, segment_ids, initial_state, method, chunk_size, chunk_combine, mixed_precision)
    batch, length, dk = q.shape
    dv = v.shape[2]
    method, chunk_combine, chunk_size = resolve(batch, length, dk, dv, method, chunk_size, chunk_combine)
    sums, inputs = accumulation_dtype(q.dtype, k.dtype, v.dtype), jnp.result_type(q.dtype, k.dtype, v.dtype)
    # Only for inputs with float32's exponent range (bfloat16): scores and states, unlike
    # attention probabilities, are unbounded and would overflow float16.
    wide_range = jnp.finfo(inputs).maxexp >= jnp.finfo(jnp.float32).maxexp
    acc = _Dtypes(sums, inputs if mixed_precision and inputs != sums and wide_range else None)
    runs = segment_runs(segment_ids, batch, length)
    s0 = None if initial_state is None else initial_state.astype(acc.sums)
    if method == "quadratic":
        return _quadratic(q, k, v, runs, s0, acc)
    if method == "recurrent":
        return _recurrent(q, k, v, runs, s0, acc)
    return _chunked(q, k, v, runs, s0, acc, chunk_size, chunk_combine)


@dataclasses.dataclass(frozen=True)
class _Dtypes:
    """``sums``: the accumulation dtype; ``inputs``: the inputs' dtype where mixed precision
    applies (None where it does not); ``products``: the second products' operand dtype."""

    sums: jnp.dtype
    inputs: jnp.dtype | None

    @property
    def products(self):
        return self.sums if self.inputs is None else self.inputs


def _einsum(spec, a, b, *, acc):
    """``einsum(spec, a, b)`` accumulated in ``acc.sums``. Under mixed precision, with both
    operands in the inputs' dtype, the backward rounds the cotangent to that dtype too, so
    its matmuls also run in it (as a bfloat16 network's backward does) instead of promoting
    to float32 (:func:`_mixed_einsum_jvp`)."""
    if acc.inputs is not None and a.dtype == b.dtype == acc.inputs:
        return _mixed_einsum(spec, acc.sums, a, b)
    return jnp.einsum(spec, a, b, preferred_element_type=acc.sums)


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    """``einsum(spec, a, b)`` with operands in their (shared) dtype, returned in ``out_dtype``
    (the forward's matmul accumulates in it). When the operands are a narrower floating dtype
    with float32's exponent range (bfloat16 under a float32 ``out_dtype``; also float32 under
    float64), derivatives are taken in the operands' dtype: the backward rounds the cotangent to
    it, so its matmuls take operands in that dtype (their accumulation is the backend's: float32
    for bfloat16 on GPU) and return it, as a bfloat16 network's backward does; forward-mode
    tangents are rounded alike. (Plain autodiff would widen the narrow operand to ``out_dtype``
    and multiply in it: on a GPU, float32 matmuls a few times slower than bfloat16's.) float16,
    whose range a cotangent can leave, and operands of ``out_dtype`` or of different dtypes
    keep plain autodiff."""
    out_dtype = jnp.dtype(out_dtype)
    if (a.dtype == b.dtype and jnp.issubdtype(a.dtype, jnp.floating) and jnp.issubdtype(out_dtype, jnp.floating)
            and jnp.finfo(a.dtype).bits < jnp.finfo(out_dtype).bits
            and jnp.finfo(a.dtype).maxexp >= jnp.finfo(jnp.float32).maxexp):
        return _mixed_einsum(spec, out_dtype, a, b)
    return jnp.einsum(spec, a, b, preferred_element_type=out_dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _mixed_einsum(spec, out_dtype, a, b):
    return jnp.einsum(spec, a, b, preferred_element_type=out_dtype)


def _mixed_einsum_jvp(spec, out_dtype, primals, tangents):
    """Tangents in the operands' dtype: ``einsum(da, b) + einsum(a, db)`` rounded to it and
    widened. Transposed for the backward, the widening becomes the cotangent's rounding and
    the einsums become matmuls in the operands' dtype. Forward mode keeps working."""
    a, b = primals
    narrow = lambda x, y: jnp.einsum(spec, x, y, preferred_element_type=a.dtype).astype(out_dtype)  # noqa: E731
    da, db = tangents
    terms = ([] if isinstance(da, SymbolicZero) else [narrow(da, b)]) + (
        [] if isinstance(db, SymbolicZero) else [narrow(a, db)])
    out = _mixed_einsum(spec, out_dtype, a, b)
    return out, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


_mixed_einsum.defjvp(_mixed_einsum_jvp, symbolic_zeros=True)


def _quadratic(q, k, v, runs, s0, acc):
    length = q.shape[1]
    scores = _einsum("btk,bsk->bts", q, k, acc=acc)  # [B, T, T]
    causal = jnp.arange(length)[None, :] < jnp.arange(length)[:, None]
    mask = causal[None] & (runs[:, :, None] == runs[:, None, :])
    masked = jnp.where(mask, scores, 0).astype(acc.products)
    out = _einsum("bts,bsv->btv", masked, v.astype(acc.products), acc=acc)
    in_last = (runs == runs[:, -1:])[..., None]
    final = _einsum("btk,btv->bkv", jnp.where(in_last, k, 0), v, acc=acc)
    if s0 is not None:
        q0 = jnp.where((runs == 0)[..., None], q, 0).astype(acc.products)
        out = out + _einsum("btk,bkv->btv", q0, s0.astype(acc.products), acc=acc)
        final = final + jnp.where((runs[:, -1] == 0)[:, None, None], s0, 0)
    return out, final


def _recurrent(q, k, v, runs, s0, acc):
    batch, _, dk = q.shape
    dv = v.shape[2]
    starts = jnp.concatenate([jnp.zeros((batch, 1), bool), runs[:, 1:] != runs[:, :-1]], axis=1)
    state0 = jnp.zeros((batch, dk, dv), acc.sums) if s0 is None else s0

    def step(state, xs):
        q_t, k_t, v_t, start_t = xs
        state = jnp.where(start_t[:, None, None], 0, state)
        out_t = _einsum("bk,bkv->bv", q_t.astype(acc.products), state.astype(acc.products), acc=acc)
        state = state + _einsum("bk,bv->bkv", k_t, v_t, acc=acc)
        return state, out_t

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, starts))
    final, out = jax.lax.scan(step, state0, xs)
    return jnp.moveaxis(out, 0, 1), final


def _chunked(q, k, v, runs, s0, acc, chunk_size, chunk_combine):
    batch, length, dk = q.shape
    dv = v.shape[2]
    n = -(-length // chunk_size)
    pad = n * chunk_size - length

    def split(x, mode="constant"):
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), mode=mode)
        return x.reshape(batch, n, chunk_size, *x.shape[2:])

    qc, kc, vc = split(q), split(k), split(v)
    rc = split(runs, mode="edge")  # padding continues the last run: no new boundary
    end_run = rc[:, :, -1]  # [B, N]
    prev_end = jnp.concatenate([jnp.zeros((batch, 1), runs.dtype), end_run[:, :-1]], axis=1)
    # Chunk summaries: the last segment's sum within each chunk, and whether a segment starts.
    in_end_run = (rc == end_run[..., None])[..., None]  # [B, N, C, 1]
    keep = (end_run == prev_end).astype(acc.sums)  # [B, N]
    sees_prev = rc == prev_end[..., None]  # [B, N, C]: no boundary between chunk start and t
    causal = jnp.arange(chunk_size)[None, :] < jnp.arange(chunk_size)[:, None]
    intra_mask = causal & (rc[..., :, None] == rc[..., None, :])  # [B, N, C, C]
    if chunk_combine == "associative":
        out, final = _combine_associative(qc, kc, vc, in_end_run, keep, sees_prev, intra_mask, s0, acc)
    else:
        out, final = _combine_scan(qc, kc, vc, in_end_run, keep, sees_prev, intra_mask, s0, acc)
    return out.reshape(batch, n * chunk_size, dv)[:, :length], final


def _intra_chunk(qc, kc, vc, mask, acc):
    scores = _einsum("...ck,...dk->...cd", qc, kc, acc=acc)
    return _einsum("...cd,...dv->...cv", jnp.where(mask, scores, 0).astype(acc.products),
                   vc.astype(acc.products), acc=acc)


def _combine_associative(qc, kc, vc, in_end_run, keep, sees_prev, intra_mask, s0, acc):
    d = _einsum("bnck,bncv->bnkv", jnp.where(in_end_run, kc, 0), vc, acc=acc)  # [B, N, Dk, Dv]
    def combine(left, right):
        keep_l, state_l = left
        keep_r, state_r = right
        return keep_l * keep_r, keep_r[..., None, None] * state_l + state_r

    kept_all, states = jax.lax.associative_scan(combine, (keep, d), axis=1)  # S_c without S0
    if s0 is not None:
        states = states + kept_all[..., None, None] * s0[:, None]
    first = jnp.zeros_like(states[:, :1]) if s0 is None else s0[:, None]
    before = jnp.concatenate([first, states[:, :-1]], axis=1)  # S_{c-1}
    inter = _einsum("bnck,bnkv->bncv", jnp.where(sees_prev[..., None], qc, 0).astype(acc.products),
                    before.astype(acc.products), acc=acc)
    return _intra_chunk(qc, kc, vc, intra_mask, acc) + inter, states[:, -1]


def _combine_scan(qc, kc, vc, in_end_run, keep, sees_prev, intra_mask, s0, acc):
    batch, _, _, dk = qc.shape
    dv = vc.shape[-1]
    state0 = jnp.zeros((batch, dk, dv), acc.sums) if s0 is None else s0

    def step(state, xs):
        q_c, k_c, v_c, end_c, keep_c, sees_c, mask_c = xs
        inter = _einsum("bck,bkv->bcv", jnp.where(sees_c[..., None], q_c, 0).astype(acc.products),
                        state.astype(acc.products), acc=acc)
        out_c = _intra_chunk(q_c, k_c, v_c, mask_c, acc) + inter
        d_c = _einsum("bck,bcv->bkv", jnp.where(end_c, k_c, 0), v_c, acc=acc)
        return keep_c[:, None, None] * state + d_c, out_c

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (qc, kc, vc, in_end_run, keep, sees_prev, intra_mask))
    final, out = jax.lax.scan(step, state0, xs)
    return jnp.moveaxis(out, 0, 1), final
