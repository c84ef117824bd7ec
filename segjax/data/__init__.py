"""Data: TFDS builders (``segjax_shapes``, ``segjax_folder``), sources and grain pipelines.

The names below load on first use (PEP 562), so that ``segjax.data.images`` (image files) and
``segjax.data.augment`` (resizing, normalisation) import without TFDS or grain, as exported-model
prediction needs. The builders register with TFDS when ``segjax.data.sources`` is imported (by
``load_dataset``, or ``import segjax.data.sources``), so ``tfds.builder("segjax_shapes")`` finds
them after that.
"""

import importlib

_WHERE = {
    "STANDARD": "segjax.data.sources",
    "Dataset": "segjax.data.sources",
    "load_dataset": "segjax.data.sources",
    "DataError": "segjax.data.errors",
    "eval_dataset": "segjax.data.pipeline",
    "eval_plan": "segjax.data.pipeline",
    "train_dataset": "segjax.data.pipeline",
    "train_iterator": "segjax.data.pipeline",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'segjax.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
