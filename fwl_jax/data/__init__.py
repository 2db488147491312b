"""Data: TFDS builders of whole documents, a SentencePiece tokenizer, token caches, and
the packed (training) and windowed (evaluation) input pipelines."""

from fwl_jax.data.builders import BUILDERS, get_builder, prepare_documents
from fwl_jax.data.errors import DataError, DataWarning
from fwl_jax.data.pipeline import (FIELDS, PackedRows, eval_batches, eval_schedule,
                                   num_windows, train_dataset, train_iterator)
from fwl_jax.data.prepare import PreparedData, prepare_dataset
from fwl_jax.data.tokenized import TokenizedSplit
from fwl_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

__all__ = [
    "BUILDERS", "BOS_ID", "DataError", "DataWarning", "EOS_ID", "FIELDS", "PAD_ID",
    "PackedRows", "PreparedData", "TokenizedSplit", "Tokenizer", "eval_batches",
    "eval_schedule", "get_builder", "num_windows", "prepare_dataset", "prepare_documents",
    "train_dataset", "train_iterator",
]
