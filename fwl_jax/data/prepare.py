"""Prepare a dataset for training: TFDS documents -> SentencePiece tokenizer -> token caches.

    python -m fwl_jax.data --dataset=shakespeare --data_dir=~/fwl_data --vocab_size=8000

Layout under the TFDS dataset folder (`DATA_DIR/NAME[/CORPUS]/1.0.0/`):
`spm<vocab_size>/tokenizer.model` and `spm<vocab_size>/{train,validation,test}/` caches.
With several processes, process 0 prepares and the others wait for its files.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from functools import cached_property
from pathlib import Path

from fwl_jax.data import builders, sources
from fwl_jax.data.errors import DataError
from fwl_jax.data.tokenized import (TokenizedSplit, cache_matches, load_tokenized,
                                    tokenize_documents)
from fwl_jax.data.tokenizer import Tokenizer, train_tokenizer, write_atomically


@dataclasses.dataclass
class PreparedData:
    """A prepared dataset: its folder, tokenizer and per-split token caches."""

    folder: Path

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.folder / "tokenizer.model")

    def split(self, name: str) -> TokenizedSplit:
        if name not in sources.SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(sources.SPLITS)}.")
        return load_tokenized(self.folder / name)


def _texts(builder, split: str):
    source = builder.as_data_source(split)
    for i in range(len(source)):
        example = source[i]
        yield example["doc_id"].decode(), example["text"].decode()


def prepare_dataset(dataset: str, data_dir: str | Path, *, vocab_size: int, seed: int = 0,
            process_index: int = 0, process_count: int = 1, timeout_s: float = 3600,
            **builder_options) -> PreparedData:
    """Prepares `dataset` once (later calls reuse everything) and returns it.

    builder_options: `source` (a local copy of the raw data), and for `text_files`
    `corpus` (a name for the corpus) and `files` (`{split: [paths]}`).
    """
    builder = builders.get_builder(dataset, data_dir, **builder_options)
    folder = Path(builder.data_dir) / f"spm{vocab_size}"
    if process_index != 0:
        _wait_for([folder / s / "meta.json" for s in sources.SPLITS], timeout_s)
        return PreparedData(folder)
    if _complete(PreparedData(folder)):
        return PreparedData(folder)  # the token caches suffice; the documents are not read
    if not builder.is_prepared():
        builder = builders.prepare_documents(dataset, data_dir, **builder_options)
    model_path = folder / "tokenizer.model"
    if not model_path.exists():
        texts = (text for _, text in _texts(builder, "train"))
        write_atomically(model_path, train_tokenizer(texts, vocab_size, seed))
    prepared = PreparedData(folder)
    for split in sources.SPLITS:
        if not cache_matches(folder / split, prepared.tokenizer):
            tokenize_documents(_texts(builder, split), prepared.tokenizer, folder / split)
    return prepared


def _complete(prepared: PreparedData) -> bool:
    if not (prepared.folder / "tokenizer.model").exists():
        return False
    return all(cache_matches(prepared.folder / s, prepared.tokenizer) for s in sources.SPLITS)


def _wait_for(paths: list[Path], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise DataError(f"waited {timeout_s:.0f} s for process 0 to prepare "
                            f"{paths[0].parent.parent}; is the data_dir on a filesystem "
                            "all processes share?")
        time.sleep(1.0)


def describe(prepared: PreparedData) -> str:
    lines = [f"prepared {prepared.folder} (vocab {prepared.tokenizer.vocab_size})"]
    for split in sources.SPLITS:
        data = prepared.split(split)
        lines.append(f"  {split:10s} {data.num_documents:7d} documents "
                     f"{len(data.tokens):12,d} tokens")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m fwl_jax.data",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(builders.BUILDERS))
    parser.add_argument("--data_dir", required=True, help="where prepared data is kept")
    parser.add_argument("--vocab_size", type=int, required=True)
    parser.add_argument("--source", help="local copy of the raw data (folder or archive)")
    parser.add_argument("--corpus", default="default", help="text_files: corpus name")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    options = {"source": args.source}
    if args.dataset == "text_files":
        options["corpus"] = args.corpus
    try:
        print(describe(prepare_dataset(args.dataset, args.data_dir, vocab_size=args.vocab_size,
                               seed=args.seed, **options)))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
