"""Whole-document scoring: every target token of a split, window by window, with the
fast-weight state carried from one window of a document to the next.

Documents are laid out in lanes (`fwl_jax.data.eval_batches`): a lane shows one
document's windows in order, so the state a lane carries into window k is the head's
state after windows 0..k-1 of the same document. The body sees only the current window.
Carry policies: `carry` (keep the state), `reset` (zero at every window: the reference
code's behaviour) and `decay` (multiply the state by `carry_decay` at each boundary).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from fwl_jax.data import FIELDS, TokenizedSplit, eval_batches, eval_schedule, num_windows
from fwl_jax.models import TransformerLM
from fwl_jax.ops import fwl as fwl_ops

CARRY_POLICIES = ("carry", "reset", "decay")


@dataclasses.dataclass(frozen=True)
class TokenScores:
    """Per-token results of a split, sorted by (document, position): all [N]."""

    doc_index: np.ndarray  # int32, index of the document in the split
    position: np.ndarray  # int32, index of the target within its document (0 = first)
    token: np.ndarray  # int32, the target token id
    nll: np.ndarray  # float32, -log p(target), nats

    @property
    def mean_nll(self) -> float:
        return float(np.mean(self.nll, dtype=np.float64)) if len(self.nll) else float("nan")

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.mean_nll))


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall time of a scoring run; the rate leaves out the first batch (compilation)."""

    seconds: float  # the whole run
    tokens: int  # every scored token
    timed_seconds: float  # from the end of the first batch
    timed_tokens: int  # tokens scored after the first batch

    @property
    def tokens_per_s(self) -> float:
        if self.timed_tokens:
            return self.timed_tokens / max(self.timed_seconds, 1e-9)
        return self.tokens / max(self.seconds, 1e-9)


def carry_factors(window_index: np.ndarray, policy: str, decay: float) -> np.ndarray:
    """[b] factor on each lane's carried state: 0 at a document's first window."""
    if policy not in CARRY_POLICIES:
        raise ValueError(f"carry policy must be one of {CARRY_POLICIES}, got {policy!r}")
    keep = (window_index > 0).astype(np.float32)
    return keep * {"carry": 1.0, "reset": 0.0, "decay": decay}[policy]


def _window_nll(model: TransformerLM, params, batch, state, keep):
    """NLL [b, L] of one batch of windows (0 where weight is 0) and the next state."""
    weights = batch["weights"].astype(jnp.float32)
    if state is not None:
        state = jax.tree.map(
            lambda s: s * keep.reshape((-1,) + (1,) * (s.ndim - 1)).astype(s.dtype), state)
    nll, state = model.apply({"params": params}, batch["inputs"], targets=batch["targets"],
                             weights=weights, positions=batch["positions"], fwl_state=state,
                             deterministic=True, method=TransformerLM.token_nll)
    return nll.astype(jnp.float32) * weights, state


class WindowScorer:
    """jit-compiled window scoring of one model on one mesh."""

    def __init__(self, model: TransformerLM, mesh: jax.sharding.Mesh, *,
                 carry: str = "carry", carry_decay: float = 1.0):
        self.model, self.mesh, self.carry, self.carry_decay = model, mesh, carry, carry_decay
        self.sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        self._score = jax.jit(lambda p, b, s, k: _window_nll(model, p, b, s, k))
        self._zeros = {}  # lanes -> compiled empty state

    def initial(self, params, lanes: int):
        """The carry into the first window: an empty fast-weight state per lane."""
        cfg = self.model.config
        if not cfg.fwl_enabled:
            return None
        if lanes not in self._zeros:
            self._zeros[lanes] = jax.jit(lambda: fwl_ops.init_state(lanes, cfg.d_model, cfg.fwl),
                                         out_shardings=self.sharding)
        return self._zeros[lanes]()

    def score(self, params, local_batch: dict, state, keep: np.ndarray):
        """(NLL [b, L], the carry into the next window)."""
        batch = {k: jax.make_array_from_process_local_data(self.sharding, local_batch[k])
                 for k in FIELDS}
        keep = jax.make_array_from_process_local_data(self.sharding, keep)
        return self._score(params, batch, state, keep)


def score_split(scorer, params, split: TokenizedSplit, *, seq_len: int, batch_size: int,
                progress=None) -> tuple[TokenScores, "Timing"]:
    """Scores every target of `split` with `scorer` (a WindowScorer or a DynamicScorer);
    returns the scores and the timing (the first batch, which compiles, is not timed).
    `batch_size` is the number of lanes over all processes; `progress(step, steps,
    documents_done, tokens, nll_sum)` is called after each batch."""
    processes, process = jax.process_count(), jax.process_index()
    lanes = batch_size // processes
    steps = eval_schedule(split, seq_len, batch_size).shape[0]
    state = scorer.initial(params, batch_size)
    windows = num_windows(split, seq_len)
    pieces, tokens, nll_sum, documents_done = [], 0, 0.0, 0
    start, timed_from = time.perf_counter(), None
    for step, batch in enumerate(eval_batches(split, seq_len, lanes, process_index=process,
                                              process_count=processes)):
        keep = carry_factors(batch["window_index"], scorer.carry, scorer.carry_decay)
        nll, state = scorer.score(params, batch, state, keep)
        fields = multihost_utils.process_allgather(
            {k: batch[k] for k in ("doc_index", "window_index", "positions", "targets",
                                   "weights")}, tiled=True)
        nll = np.asarray(multihost_utils.process_allgather(nll, tiled=True))
        real = fields["weights"] > 0
        last = fields["doc_index"] >= 0
        documents_done += int(np.sum(fields["window_index"][last] ==
                                     windows[fields["doc_index"][last]] - 1))
        docs = np.broadcast_to(fields["doc_index"][:, None], real.shape)[real]
        pieces.append((docs, fields["positions"][real], fields["targets"][real], nll[real]))
        tokens += int(real.sum())
        nll_sum += float(nll[real].sum(dtype=np.float64))
        if progress is not None:
            progress(step + 1, steps, documents_done, tokens, nll_sum)
        if timed_from is None:
            timed_from = (time.perf_counter(), tokens)
    end = time.perf_counter()
    timing = Timing(end - start, tokens, 0.0, 0)
    if timed_from is not None and tokens > timed_from[1]:
        timing = Timing(end - start, tokens, end - timed_from[0], tokens - timed_from[1])
    if not pieces:
        empty = np.zeros((0,), np.int32)
        return TokenScores(empty, empty, empty, np.zeros((0,), np.float32)), timing
    doc, pos, tok, nll = (np.concatenate(x) for x in zip(*pieces))
    order = np.lexsort((pos, doc))
    return TokenScores(doc[order].astype(np.int32), pos[order].astype(np.int32),
                       tok[order].astype(np.int32), nll[order].astype(np.float32)), timing
