"""Segmentation metrics from a confusion matrix.

``confusion_matrix`` is a pure JAX function, accumulated on device; inside a jit over globally
sharded batches its sum already covers every device and process. ``summarize`` derives the
metrics in NumPy. Pixels with ``valid == False`` (padding, ignore label) are not counted. A binary
model (one output channel) is scored as two classes, background and foreground.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from segjax.losses import head_probabilities


def predict(
    logits: jax.Array | list[jax.Array], mode: str = "accurate", head: int = -1
) -> jax.Array:
    """Class ids (B, H, W). Deep supervision: combined by ``losses.head_probabilities``
    ('accurate' averages the heads' probabilities, 'fast' takes one head, the last by default)."""
    if isinstance(logits, list | tuple):
        return jnp.argmax(head_probabilities(logits, mode, head), axis=-1)
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1)


def num_scored_classes(num_classes: int) -> int:
    return max(num_classes, 2)


def confusion_matrix(
    predictions: jax.Array, labels: jax.Array, valid: jax.Array, num_classes: int
) -> jax.Array:
    """(C, C) int32 counts: rows are true classes, columns predicted ones."""
    c = num_scored_classes(num_classes)
    index = labels.reshape(-1).astype(jnp.int32) * c + predictions.reshape(-1).astype(jnp.int32)
    counts = jnp.bincount(index, weights=valid.reshape(-1).astype(jnp.int32), length=c * c)
    return counts.astype(jnp.int32).reshape(c, c)


def per_image_confusion(
    predictions: jax.Array, labels: jax.Array, valid: jax.Array, num_classes: int
) -> jax.Array:
    """(B, C, C): one confusion matrix per image of the batch. Summed over B it is the batch's
    ``confusion_matrix``; kept apart it gives metrics averaged over images."""
    return jax.vmap(lambda p, y, v: confusion_matrix(p, y, v, num_classes))(
        predictions, labels, valid
    )


def _per_class(confusion: np.ndarray) -> tuple[np.ndarray, ...]:
    """tp, fp, fn, occurs, IoU and Dice per class of one (C, C) confusion matrix or of a stack
    (..., C, C); IoU and Dice are nan for a class that occurs nowhere."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    fp = confusion.sum(axis=-2) - tp
    fn = confusion.sum(axis=-1) - tp
    occurs = (tp + fp + fn) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(occurs, tp / (tp + fp + fn), np.nan)
        dice = np.where(occurs, 2 * tp / (2 * tp + fp + fn), np.nan)
    return tp, fp, fn, occurs, iou, dice


def summarize(confusion: np.ndarray, class_names=None) -> dict[str, float]:
    """Mean IoU, per-class IoU, Dice/F1, precision, recall and pixel accuracy.

    Means are over the classes that occur (in the labels or the predictions); a class that occurs
    nowhere has no IoU and is left out, rather than counted as perfect or as zero."""
    confusion = np.asarray(confusion, np.float64)
    tp, fp, fn, occurs, iou, dice = _per_class(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    total = confusion.sum()
    names = class_names or [str(i) for i in range(len(tp))]
    out = {
        "miou": float(np.nanmean(iou)) if occurs.any() else float("nan"),
        "dice": float(np.nanmean(dice)) if occurs.any() else float("nan"),
        "precision": float(np.nanmean(precision)) if (tp + fp > 0).any() else float("nan"),
        "recall": float(np.nanmean(recall)) if (tp + fn > 0).any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
    }
    for name, value, d in zip(names, iou, dice, strict=True):
        out[f"iou/{name}"] = float(value)
        out[f"dice/{name}"] = float(d)
    return out


def summarize_per_image(confusions: np.ndarray, class_names=None) -> dict[str, float]:
    """Metrics averaged over images rather than pooled over pixels: each image's mean IoU and
    Dice (over the classes that occur in it), then their mean over images; per class, the mean
    over the images where the class occurs. Images without a valid pixel (batch padding) are
    left out. Keys carry an ``image_`` prefix: ``image_miou``, ``image_dice``,
    ``image_iou/<class>``, ``image_dice/<class>``, and ``images`` (how many were averaged)."""
    confusions = np.asarray(confusions, np.float64)
    confusions = confusions[confusions.sum(axis=(1, 2)) > 0]
    tp, _, _, _, iou, dice = _per_class(confusions)
    out = {"images": int(len(confusions))}
    if not len(confusions):
        return {**out, "image_miou": float("nan"), "image_dice": float("nan")}
    out["image_miou"] = float(np.mean(np.nanmean(iou, axis=1)))
    out["image_dice"] = float(np.mean(np.nanmean(dice, axis=1)))
    names = class_names or [str(i) for i in range(tp.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class in no image: nanmean is nan
        for i, name in enumerate(names):
            out[f"image_iou/{name}"] = float(np.nanmean(iou[:, i]))
            out[f"image_dice/{name}"] = float(np.nanmean(dice[:, i]))
    return out
