"""SentencePiece tokenizer: unigram with byte fallback, trained on the train split.

Ids: 0 pad, 1 unk, 2 bos, 3 eos, 4 is the newline (a user-defined piece, so line breaks
survive and cost one token); text is not normalised, so decode(encode(s)) == s. A space
is put after every newline not followed by another (and taken off again in `decode`),
so a word at the start of a line is the same piece ("▁King") as within a line.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm

from fwl_jax.data.errors import DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_CHUNK_CHARS = 2000  # training sentences: pieces of documents, newlines kept


def _spaced(text: str) -> str:
    return re.sub(r"\n(?!\n)", "\n ", text)


def _unspaced(text: str) -> str:
    return text.replace("\n ", "\n")


class Tokenizer:
    """A loaded SentencePiece model with batch encoding to numpy."""

    def __init__(self, model_proto: bytes):
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.sha256 = hashlib.sha256(model_proto).hexdigest()
        self.vocab_size = self.processor.get_piece_size()
        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        try:
            return cls(Path(path).read_bytes())
        except (OSError, RuntimeError) as e:
            raise DataError(f"cannot load the tokenizer {path} ({e}); delete it to "
                            "train it again.") from None

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text (no BOS/EOS), encoded in parallel in C++."""
        texts = [_spaced(t) for t in texts]
        ids = self.processor.encode(texts, out_type=int, num_threads=os.cpu_count() or 1)
        return [np.asarray(x, np.int32) for x in ids]

    def decode(self, ids) -> str:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)
               if i not in (PAD_ID, BOS_ID, EOS_ID)]
        return _unspaced(self.processor.decode(ids))


def training_sentences(texts: Iterable[str]) -> Iterator[str]:
    """Documents cut into pieces of at most about `_CHUNK_CHARS` characters at line (or
    else space) boundaries, newlines included, as SentencePiece reads them."""
    for text in texts:
        piece = ""
        for line in re.split(r"(?<=\n)", _spaced(text)):
            while len(line) > _CHUNK_CHARS:
                cut = line.rfind(" ", 0, _CHUNK_CHARS) + 1 or _CHUNK_CHARS
                yield from (s for s in (piece, line[:cut]) if s.strip())
                piece, line = "", line[cut:]
            if len(piece) + len(line) > _CHUNK_CHARS:
                if piece.strip():
                    yield piece
                piece = ""
            piece += line
        if piece.strip():
            yield piece


def train_tokenizer(texts: Iterable[str], vocab_size: int, seed: int = 0,
                    max_sentences: int = 1_000_000) -> bytes:
    """Trains the unigram model on `texts`; returns the serialized model."""
    import io
    if vocab_size < 300:
        raise DataError(f"vocab_size {vocab_size} is too small: byte fallback alone "
                        "takes 261 ids; use at least 300.")
    writer = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_sentences(texts), model_writer=writer,
            vocab_size=vocab_size, model_type="unigram", byte_fallback=True,
            character_coverage=0.9995, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID,
            eos_id=EOS_ID, user_defined_symbols=["\n"],
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            split_digits=True, max_sentence_length=4 * _CHUNK_CHARS + 16,
            input_sentence_size=max_sentences, shuffle_input_sentence=True,
            num_threads=os.cpu_count() or 1, minloglevel=2)
    except RuntimeError as e:
        reason = str(e).split("] ")[-1].split(" Increase")[0]
        raise DataError(f"cannot train a tokenizer with vocab_size {vocab_size} on this "
                        f"corpus: {reason} Choose a vocab_size that fits.") from None
    return writer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
