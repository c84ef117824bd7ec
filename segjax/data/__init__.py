"""Data: TFDS builders (``segjax_shapes``, ``segjax_folder``), sources and grain pipelines.

Importing this package registers the builders, so ``tfds.builder("segjax_shapes")`` finds them.
"""

from segjax.data.errors import DataError
from segjax.data.pipeline import (
    eval_dataset,
    eval_plan,
    train_dataset,
    train_iterator,
)
from segjax.data.sources import STANDARD, Dataset, load_dataset

__all__ = [
    "STANDARD",
    "DataError",
    "Dataset",
    "eval_dataset",
    "eval_plan",
    "load_dataset",
    "train_dataset",
    "train_iterator",
]
