"""Batches for training and evaluation, built from a `TokenizedSplit`.

Every document d of n tokens becomes n + 1 (input, target) pairs: inputs
`[BOS, t1 .. tn]`, targets `[t1 .. tn, EOS]`. All arrays are int32 and fixed-shape.

Training (`train_iterator`): per epoch the documents are shuffled with the seed, their
pair streams concatenated and cut into rows of `seq_len` pairs (the last row padded),
and the rows shuffled. A row holds `inputs`, `targets`, `weights` (1 for a real pair, 0
for padding), `segment_ids` (1, 2, ... a new id at each document start within the row; 0
for padding) and `positions` (the pair's index within its document). The rows form a
grain `MapDataset`, so an iterator's `get_state()` / `set_state()` resume exactly, and
each process computes only its own rows: process p of P takes rows
`[s*B + p*B/P, s*B + (p+1)*B/P)` of global batch s, so the global batch is the same for
any number of processes.

Evaluation (`eval_batches`): each document cut into consecutive windows of `seq_len`
pairs (the last padded), laid out in `batch_size` lanes: documents go in order to the
lane with the fewest windows so far, and a lane shows its documents' windows in order,
so fast-weight state and context can be carried from one window to the next (reset
where `window_index == 0`). Idle lane slots have `doc_index == -1` and zero weights.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
from collections.abc import Iterator

import grain
import numpy as np

from fwl_jax.data.errors import DataError
from fwl_jax.data.tokenized import TokenizedSplit
from fwl_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

FIELDS = ("inputs", "targets", "weights", "segment_ids", "positions")


def document_pairs(split: TokenizedSplit, docs: np.ndarray, offsets: np.ndarray,
                   valid: np.ndarray) -> dict[str, np.ndarray]:
    """Input and target of pair `offsets[i]` of document `docs[i]` (any shape);
    `valid` False gives padding."""
    starts, lengths = split.offsets[docs], split.lengths[docs]
    last = max(len(split.tokens) - 1, 0)
    before = np.clip(starts + offsets - 1, 0, last)
    at = np.clip(starts + offsets, 0, last)
    tokens = np.asarray(split.tokens)
    inputs = np.where(offsets == 0, BOS_ID, tokens[before] if len(tokens) else 0)
    targets = np.where(offsets >= lengths, EOS_ID, tokens[at] if len(tokens) else 0)
    return {"inputs": np.where(valid, inputs, PAD_ID).astype(np.int32),
            "targets": np.where(valid, targets, PAD_ID).astype(np.int32),
            "weights": valid.astype(np.int32),
            "positions": np.where(valid, offsets, 0).astype(np.int32)}


@dataclasses.dataclass(frozen=True)
class _Epoch:
    order: np.ndarray       # [D] documents in stream order
    ends: np.ndarray        # [D] cumulative pair counts in stream order
    rows: np.ndarray | None  # [R] row permutation, or None when rows are not shuffled


class PackedRows:
    """Random-access rows of packed documents over `num_epochs` epochs (grain source)."""

    def __init__(self, split: TokenizedSplit, seq_len: int, *, seed: int = 0,
                 shuffle: bool = True, num_epochs: int | None = None):
        if split.num_documents == 0:
            raise DataError("the split has no documents to train on.")
        if seq_len < 1:
            raise DataError(f"seq_len must be positive, got {seq_len}.")
        self.split, self.seq_len, self.seed, self.shuffle = split, seq_len, seed, shuffle
        self.num_pairs = int(split.lengths.sum()) + split.num_documents
        self.rows_per_epoch = -(-self.num_pairs // seq_len)
        self.num_epochs = num_epochs or 2**40 // self.rows_per_epoch
        self._cached: tuple[int, _Epoch] | None = None

    def __len__(self) -> int:
        return self.rows_per_epoch * self.num_epochs

    def _epoch(self, epoch: int) -> _Epoch:
        """The epoch's layout, kept for the epoch last asked for (readers share it)."""
        cached = self._cached
        if cached is None or cached[0] != epoch:
            self._cached = cached = (epoch, self._layout(epoch))
        return cached[1]

    def _layout(self, epoch: int) -> _Epoch:
        rng = np.random.default_rng([self.seed, epoch])
        docs = np.arange(self.split.num_documents)
        order = rng.permutation(docs) if self.shuffle else docs
        ends = np.cumsum(self.split.lengths[order] + 1)
        rows = rng.permutation(self.rows_per_epoch) if self.shuffle else None
        return _Epoch(order, ends, rows)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        epoch, row = divmod(int(index), self.rows_per_epoch)
        layout = self._epoch(epoch)
        if layout.rows is not None:
            row = int(layout.rows[row])
        stream = row * self.seq_len + np.arange(self.seq_len)    # [L] pair index in epoch
        valid = stream < self.num_pairs
        k = np.minimum(np.searchsorted(layout.ends, stream, side="right"),
                       len(layout.ends) - 1)                     # [L] index in stream order
        offsets = stream - (layout.ends[k] - self.split.lengths[layout.order[k]] - 1)
        pairs = document_pairs(self.split, layout.order[k], offsets, valid)
        pairs["segment_ids"] = np.where(valid, k - k[0] + 1, 0).astype(np.int32)
        return pairs


def _global_row(local_index: int, *, batch_size: int, process_index: int,
                process_count: int) -> int:
    per_process = batch_size // process_count
    step, j = divmod(local_index, per_process)
    return step * batch_size + process_index * per_process + j


def train_dataset(split: TokenizedSplit, seq_len: int, batch_size: int, *, seed: int = 0,
                  shuffle: bool = True, num_epochs: int | None = None,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
    """This process's share of the global batches of `batch_size` rows, as a MapDataset
    of dicts of [batch_size // process_count, seq_len] int32 arrays."""
    if batch_size % process_count:
        raise DataError(f"batch_size {batch_size} must be a multiple of the number of "
                        f"processes ({process_count}).")
    rows = PackedRows(split, seq_len, seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    per_process = batch_size // process_count
    steps = len(rows) // batch_size
    to_global = functools.partial(_global_row, batch_size=batch_size,
                                  process_index=process_index, process_count=process_count)
    return (grain.MapDataset.range(steps * per_process)
            .map(lambda i: rows[to_global(i)])
            .batch(per_process, drop_remainder=True))


def train_iterator(split: TokenizedSplit, seq_len: int, batch_size: int, *,
                   num_threads: int = 2, prefetch: int = 64, **options
                   ) -> grain.DatasetIterator:
    """An iterator over `train_dataset` batches read ahead by `num_threads` threads;
    `get_state()` / `set_state(state)` save and restore its position."""
    dataset = train_dataset(split, seq_len, batch_size, **options)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(read))


# ------------------------------------------------------------------------ evaluation


def num_windows(split: TokenizedSplit, seq_len: int) -> np.ndarray:
    """[D] windows per document: ceil((n + 1) / seq_len)."""
    return -(-(split.lengths + 1) // seq_len)


def eval_schedule(split: TokenizedSplit, seq_len: int, num_lanes: int) -> np.ndarray:
    """[steps, num_lanes, 2] (document, window) per lane and step; -1 where idle."""
    windows = num_windows(split, seq_len)
    lanes = [(0, lane, []) for lane in range(num_lanes)]        # (load, lane, documents)
    heapq.heapify(lanes)
    for d in range(split.num_documents):
        load, lane, docs = heapq.heappop(lanes)
        docs.append(d)
        heapq.heappush(lanes, (load + int(windows[d]), lane, docs))
    steps = max(load for load, _, _ in lanes) if split.num_documents else 0
    schedule = np.full((steps, num_lanes, 2), -1, np.int64)
    for _, lane, docs in lanes:
        pairs = [(d, w) for d in docs for w in range(windows[d])]
        if pairs:
            schedule[:len(pairs), lane] = pairs
    return schedule


def eval_batches(split: TokenizedSplit, seq_len: int, batch_size: int, *,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation batches of this process's `batch_size` lanes (of
    `batch_size * process_count` in all; every process yields the same number of
    batches). Besides `FIELDS`: `doc_index` and `window_index`, [batch_size] each."""
    schedule = eval_schedule(split, seq_len, batch_size * process_count)
    mine = schedule[:, process_index * batch_size:(process_index + 1) * batch_size]
    columns = np.arange(seq_len)
    for step in mine:
        docs, windows = step[:, 0], step[:, 1]
        idle = docs < 0
        safe_docs = np.where(idle, 0, docs)
        offsets = np.maximum(windows, 0)[:, None] * seq_len + columns[None]  # [b, L]
        lengths = split.lengths[safe_docs][:, None] + 1
        valid = (offsets < lengths) & ~idle[:, None]
        batch = document_pairs(split, np.broadcast_to(safe_docs[:, None], offsets.shape),
                               offsets, valid)
        batch["segment_ids"] = valid.astype(np.int32)
        batch["doc_index"] = docs.astype(np.int32)
        batch["window_index"] = windows.astype(np.int32)
        yield batch
