"""Paired comparisons of two models over the same test images, from ``segjax.evaluate``'s
per-image confusion matrices (``eval_<split>.json``, ``per_image``).

A difference between two models' scores on one dataset is only worth stating if it exceeds what
the choice of images gives: both models are scored on the same images, so the test is paired.
``compare`` gives the Wilcoxon signed-rank test of the per-image differences (two-sided) and a
bootstrap 95% interval of their mean (BCa, fixed seed, so a report rebuilds byte for byte).
"""

import numpy as np
from scipy import stats

ALPHA = 0.05


def per_image_iou(records: list[dict], class_index: int) -> np.ndarray:
    """Each image's IoU of one class (NaN where the class is in neither truth nor prediction),
    in the records' order."""
    confusion = np.asarray([r["confusion"] for r in records], np.float64)
    tp = confusion[:, class_index, class_index]
    union = confusion[:, class_index, :].sum(1) + confusion[:, :, class_index].sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def batch_pooled_iou(
    records: list[dict], class_index: int, batch_size: int = 16, smooth: float = 1e-5
) -> float:
    """pytorch-nested-unet's validation IoU: the class's pixels pooled over each batch of
    ``batch_size`` images in the split's order, ``(intersection + smooth) / (union + smooth)``,
    averaged over batches weighted by their size (its ``iou_score`` and ``AverageMeter``)."""
    confusion = np.asarray([r["confusion"] for r in records], np.float64)
    total, count = 0.0, 0
    for start in range(0, len(confusion), batch_size):
        batch = confusion[start : start + batch_size].sum(0)
        tp = batch[class_index, class_index]
        union = batch[class_index, :].sum() + batch[:, class_index].sum() - tp
        total += (tp + smooth) / (union + smooth) * len(confusion[start : start + batch_size])
        count += len(confusion[start : start + batch_size])
    return total / count


def seed_average(per_seed: list[np.ndarray]) -> np.ndarray:
    """Per image, the mean over a model's seeds (images in the same order for every seed)."""
    return np.nanmean(np.stack(per_seed), axis=0)


def compare(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = 10_000) -> dict:
    """A against B on the same images: mean difference (A - B), its bootstrap 95% interval and
    the Wilcoxon signed-rank p-value. Images where either value is NaN are left out."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same images: {a.shape} against {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    difference = a[keep] - b[keep]
    if np.ptp(difference) == 0:  # every image differs by the same amount: nothing to resample
        low = high = float(difference[0])
    else:
        interval = stats.bootstrap(
            (difference,),
            np.mean,
            confidence_level=0.95,
            n_resamples=resamples,
            random_state=np.random.default_rng(seed),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    p_value = float(stats.wilcoxon(difference).pvalue) if np.any(difference) else 1.0
    return {
        "images": int(keep.sum()),
        "mean_a": float(a[keep].mean()),
        "mean_b": float(b[keep].mean()),
        "difference": float(difference.mean()),
        "median": float(np.median(difference)),
        "a_higher": int((difference > 0).sum()),
        "low": low,
        "high": high,
        "p_value": p_value,
        "significant": p_value <= ALPHA,
    }


def sentence(name_a: str, name_b: str, result: dict) -> str:
    """The finding in words: which is higher, by how much, and whether it is significant."""
    higher, lower = (name_a, name_b) if result["difference"] >= 0 else (name_b, name_a)
    verdict = f"significant at {ALPHA}" if result["significant"] else f"not significant at {ALPHA}"
    # The bootstrap interval is about the mean difference, the signed-rank test about whether
    # the per-image differences are centred on 0: skewed differences can part them, and the
    # sentence then says so, with the median and the count that show the skew.
    excludes_zero = result["low"] > 0 or result["high"] < 0
    skew = (
        f"median difference {result['median']:+.4f}, {name_a} higher on {result['a_higher']} "
        f"of {result['images']} images"
    )
    opposite = result["median"] * result["difference"] < 0
    if excludes_zero != result["significant"] or (opposite and result["significant"]):
        verdict += (
            f" by the signed-rank test, which the mean disagrees with (its interval "
            f"{'excludes' if excludes_zero else 'includes'} 0; {skew})"
        )
    elif opposite:
        verdict += f"; the mean and the median differ in sign ({skew})"
    gap = f"{abs(result['difference']):.4f}"
    finding = (
        f"{name_a} and {name_b} score the same per image to 4 decimals"
        if gap == "0.0000"
        else f"{higher} scores {gap} higher than {lower} per image"
    )
    return (
        f"{finding} "
        f"(95% interval {result['low']:+.4f} to {result['high']:+.4f} for {name_a} - {name_b}, "
        f"Wilcoxon p = {result['p_value']:.3g}, {result['images']} images): {verdict}."
    )
