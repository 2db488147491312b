"""Tokenized documents of one split, cached on disk so training never re-tokenizes.

A cache folder holds `tokens.bin` (every document's ids, concatenated, no BOS/EOS),
`offsets.npy` ([D+1] int64: document d is `tokens[offsets[d]:offsets[d+1]]`) and
`meta.json` (doc ids, dtype, the tokenizer's sha256). It is written to a temporary
folder and renamed into place, so a crash never leaves half a cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from fwl_jax.data.errors import DataError
from fwl_jax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
    """Documents as token ids: `tokens` [N], `offsets` [D+1], `doc_ids` [D]."""

    tokens: np.ndarray
    offsets: np.ndarray
    doc_ids: tuple[str, ...]

    def __post_init__(self):
        if len(self.offsets) != len(self.doc_ids) + 1 or self.offsets[-1] != len(self.tokens):
            raise DataError("token cache is inconsistent (offsets do not match tokens); "
                            "delete the cache folder to tokenize again.")

    @property
    def num_documents(self) -> int:
        return len(self.doc_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def head(self, n: int) -> "TokenizedSplit":
        """The first `n` documents (all of them if n <= 0 or n >= D)."""
        if n <= 0 or n >= self.num_documents:
            return self
        offsets = self.offsets[:n + 1]
        return TokenizedSplit(self.tokens[:offsets[-1]], offsets, self.doc_ids[:n])

    def document(self, d: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[d]:self.offsets[d + 1]], np.int32)


def tokenize_documents(documents, tokenizer: Tokenizer, folder: Path,
                       batch_documents: int = 64) -> None:
    """Encodes `(doc_id, text)` pairs in batches, streaming ids to a new cache `folder`."""
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32
    doc_ids, offsets = [], [0]
    with open(partial / "tokens.bin", "wb") as out:
        batch = []
        for item in [*documents, None]:
            if item is not None:
                batch.append(item)
            if batch and (item is None or len(batch) == batch_documents):
                for (doc_id, _), ids in zip(batch, tokenizer.encode([t for _, t in batch])):
                    ids.astype(dtype).tofile(out)
                    doc_ids.append(doc_id)
                    offsets.append(offsets[-1] + len(ids))
                batch = []
    np.save(partial / "offsets.npy", np.asarray(offsets, np.int64))
    meta = {"doc_ids": doc_ids, "dtype": np.dtype(dtype).name,
            "tokenizer_sha256": tokenizer.sha256, "num_tokens": offsets[-1]}
    (partial / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def cache_matches(folder: Path, tokenizer: Tokenizer) -> bool:
    """Whether `folder` is a finished cache made with this tokenizer."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("tokenizer_sha256") == tokenizer.sha256


def load_tokenized(folder: Path) -> TokenizedSplit:
    """Memory-maps a cache written by `tokenize_documents`."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        offsets = np.load(folder / "offsets.npy")
        tokens = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r",
                           shape=(meta["num_tokens"],)) if meta["num_tokens"] else \
            np.zeros((0,), meta["dtype"])
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"token cache {folder} is unreadable ({e}); delete it to "
                        "tokenize again.") from None
    return TokenizedSplit(tokens, offsets, tuple(meta["doc_ids"]))
