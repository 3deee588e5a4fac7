"""Data pipelines: text corpora -> token streams -> batches."""

from lmlab.data.text import (
    BUNDLED_SHAKESPEARE,
    TokenData,
    gather_blocks,
    iter_eval_batches,
    iter_file_chunks,
    iter_text,
    list_text_files,
    n_windows,
    random_blocks,
)

__all__ = [
    "BUNDLED_SHAKESPEARE",
    "TokenData",
    "gather_blocks",
    "iter_eval_batches",
    "iter_file_chunks",
    "iter_text",
    "list_text_files",
    "n_windows",
    "random_blocks",
]
