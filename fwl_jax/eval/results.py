"""What an evaluation writes: a JSON report and per-token results (compressed numpy)
with the token's training-set frequency and its earlier occurrences in the document."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fwl_jax.eval.scoring import TokenScores


def token_frequencies(train_tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """[V] int64: how often each token occurs in the training split."""
    counts = np.zeros(vocab_size, np.int64)
    for start in range(0, len(train_tokens), 1 << 24):  # chunks keep memory flat
        counts += np.bincount(np.asarray(train_tokens[start:start + (1 << 24)]),
                              minlength=vocab_size)[:vocab_size]
    return counts


def prior_occurrences(doc_index: np.ndarray, token: np.ndarray) -> np.ndarray:
    """[N] how many times each target already occurred earlier in its document (as a
    target), for results sorted by (document, position)."""
    order = np.lexsort((np.arange(len(token)), token, doc_index))  # stable within groups
    key_doc, key_tok = doc_index[order], token[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (key_doc[1:] != key_doc[:-1]) | (key_tok[1:] != key_tok[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    counts = np.empty(len(order), np.int32)
    counts[order] = np.arange(len(order)) - group_start
    return counts


def save_tokens(path: Path, scores: TokenScores, doc_ids, frequencies: np.ndarray) -> None:
    np.savez_compressed(
        path, doc_index=scores.doc_index, position=scores.position, token=scores.token,
        nll=scores.nll, train_frequency=frequencies[scores.token],
        prior_occurrences=prior_occurrences(scores.doc_index, scores.token),
        doc_ids=np.asarray(doc_ids, dtype=str))


def load_tokens(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
