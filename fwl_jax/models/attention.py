"""Causal self-attention of the body, with packed documents (``segment_ids``).

``causal_attention(q, k, v, segment_ids, impl)``: q [B, T, H, hd], k and v [B, T, K, hd],
segment_ids [B, T] int or None; each token attends to itself and the earlier tokens of its
own segment (a segment is a run of equal ids; the masked implementations compare ids, the
packed one reads runs: the same wherever a row never reuses an id after another, as the input
pipeline's ids 1, 2, ... a row never do). Implementations:

* ``xla``: ``jax.nn.dot_product_attention`` with the [B, 1, T, T] same-segment mask.
* ``cudnn``: cuDNN's fused kernel through ``jax.nn.dot_product_attention``; with segments the
  mask becomes an additive bias, which cuDNN reads from memory (and differentiates).
* ``cudnn_packed``: cuDNN's packed-sequence mode (Hopper or newer): every row's segments are
  given as lengths and offsets (:func:`segment_layout`), so the kernel skips the blocks
  between documents instead of reading a mask. The kernel's cost grows with the number of
  segments a row it is laid out for (its capacity), used or not: on an H200 at B 16, T 1,024,
  12 heads of 64, forward + backward took 0.43 ms with capacity 1 and 0.68 ms with 16 for rows
  of one document, 0.38 ms with capacity 4 and 0.60 ms with 16 for rows of four (cuDNN's masked
  kernel: 0.64 ms; docs/PERFORMANCE.md, session 19). So a kernel is compiled for each capacity
  of :func:`packed_capacities` and ``lax.switch`` runs the smallest that holds every row's
  segments; a batch with more than ``max_segments`` falls back to ``cudnn``.
  This uses ``jax._src.cudnn.fused_attention_stablehlo.dot_product_attention`` (the packed
  mode has no public entry point in jax 0.10 / 0.11).

``cached_attention(q, k, v, mask, filled, impl)``: T new queries over a key/value cache of L
slots (decoding, and the segments of dynamic evaluation), ``mask`` [B, 1, T, L] saying which
slots each query sees. With ``cudnn`` the mask is an additive bias and the slots from
``filled`` on are padding: cuDNN skips their blocks instead of scoring every slot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "cudnn_packed")


def segment_layout(segment_ids: jax.Array, max_segments: int):
    """The runs of equal ids of each row as cuDNN's packed layout.

    Returns ``lengths`` [B, M] (run lengths, -1 past the row's last run), ``offsets``
    [B, M + 1] (each run's first position, -1 past the last) and ``fits`` [] bool (no row has
    more than M = ``max_segments`` runs).
    """
    batch, length = segment_ids.shape
    starts = jnp.concatenate([jnp.ones((batch, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    run = jnp.cumsum(starts, axis=1) - 1  # [B, T] index of each token's run
    count = run[:, -1] + 1  # [B] runs per row
    slots = jnp.arange(max_segments + 1)
    lengths = jnp.sum(run[:, :, None] == slots[None, None, :max_segments], axis=1)  # [B, M]
    lengths = jnp.where(slots[None, :max_segments] < count[:, None], lengths, -1)
    position = jnp.where(starts, jnp.arange(length)[None, :], length)
    first = jnp.min(jnp.where(run[:, :, None] == slots[None, None, :], position[:, :, None], length), axis=1)
    offsets = jnp.where(slots[None, :] < count[:, None], first, -1)
    return lengths.astype(jnp.int32), offsets.astype(jnp.int32), jnp.all(count <= max_segments)


def causal_attention(q, k, v, segment_ids=None, impl: str = "xla", max_segments: int = 16):
    """[B, T, H, hd] attention output (see the module docstring)."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if segment_ids is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl.split("_")[0])
    if impl != "cudnn_packed":
        return _masked(q, k, v, segment_ids, impl)
    capacities = packed_capacities(max_segments)
    runs = 1 + jnp.sum(segment_ids[:, 1:] != segment_ids[:, :-1], axis=1)  # [B] segments a row
    # The smallest capacity that holds the batch's most segments; past the last: the masked kernel.
    choice = jnp.searchsorted(jnp.asarray(capacities), jnp.max(runs))
    branches = [lambda q, k, v, c=c: _packed(q, k, v, *segment_layout(segment_ids, c)[:2]) for c in capacities]
    branches.append(lambda q, k, v: _masked(q, k, v, segment_ids, "cudnn"))
    return jax.lax.switch(choice, branches, q, k, v)


def packed_capacities(max_segments: int) -> tuple[int, ...]:
    """The capacities `cudnn_packed` compiles a kernel for: 1, 2, 4, ... below ``max_segments``,
    then ``max_segments``."""
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, got {max_segments}")
    return tuple(2**i for i in range(max_segments.bit_length()) if 2**i < max_segments) + (max_segments,)


def _masked(q, k, v, segment_ids, impl):
    """Causal attention within segments through a [B, 1, T, T] mask."""
    return jax.nn.dot_product_attention(q, k, v, mask=(segment_ids[:, :, None] == segment_ids[:, None, :])[:, None],
                                        is_causal=True, implementation=impl)


def cached_attention(q, k, v, mask, filled=None, impl: str = "xla"):
    """[B, T, H, hd] attention of queries q over a cache k, v [B, L, K, hd] (module docstring);
    ``filled`` [] int or None: the slots in use, the first ``filled`` (those past it are masked
    for every query, on top of ``mask``)."""
    if impl not in ("xla", "cudnn"):
        raise ValueError(f"cached attention implementation must be xla or cudnn, got {impl!r}")
    if impl == "xla":
        lengths = None if filled is None else jnp.full(q.shape[:1], jnp.minimum(filled, k.shape[1]), jnp.int32)
        return jax.nn.dot_product_attention(q, k, v, mask=mask, key_value_seq_lengths=lengths, implementation="xla")
    # The mask broadcast over the heads: under vmap cuDNN's batching rule reshapes the bias to
    # [B, heads, T, L] (jax 0.10 / 0.11), which fails for a bias with one head.
    mask = jnp.broadcast_to(mask, mask.shape[:1] + (q.shape[2],) + mask.shape[2:])
    if filled is None:
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
    # Ones [B] that depend on q, so that the lengths carry q's batch dimensions under vmap (cuDNN's
    # batching rule folds every vmapped dimension into B and expects the lengths to have them).
    ones = jnp.where(q[:, 0, 0, 0] == q[:, 0, 0, 0], 1, 1).astype(jnp.int32)
    filled = jnp.minimum(filled, k.shape[1])
    return jax.nn.dot_product_attention(q, k, v, mask=mask, query_seq_lengths=ones * q.shape[1],
                                        key_value_seq_lengths=ones * filled, implementation="cudnn")


def _packed(q, k, v, lengths, offsets):
    from jax._src.cudnn import fused_attention_stablehlo as cudnn  # no public entry point

    k, v = _repeat_kv(k, q.shape[2]), _repeat_kv(v, q.shape[2])
    return cudnn.dot_product_attention(
        q, k, v, q_seqlen=lengths, kv_seqlen=lengths, q_offsets=offsets, kv_offsets=offsets,
        scale=q.shape[-1] ** -0.5, mask_type=cudnn.MaskType.PADDING_CAUSAL)


def _repeat_kv(x, heads):
    """Grouped-query keys/values [B, T, K, hd] -> [B, T, H, hd] (a no-op when K == H)."""
    return x if x.shape[2] == heads else jnp.repeat(x, heads // x.shape[2], axis=2)
