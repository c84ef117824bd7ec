"""From model outputs to instance label maps, on the host (NumPy).

``paste_masks``: Mask R-CNN's detections (boxes, scores, 28x28 mask probabilities) into one label
map. Each mask is resampled bilinearly over its box as Detectron2's ``paste_masks_in_image`` does
(pixel centres mapped into the mask's grid, zero outside it) and thresholded; detections are laid
down best first, each taking only pixels no better one holds, and one left with fewer than
``min_area`` pixels is dropped. Label k is the k-th best detection kept.

``semantic_instances``: the baseline without detection, a semantic model's foreground probability
turned into instances, by connected components or by a seeded watershed (seeds: the h-maxima of
the distance transform, one per nucleus-like blob; every component keeps at least one seed).
"""

import dataclasses

import numpy as np
from scipy import ndimage

SPLITTERS = ("components", "watershed")
MASK_THRESHOLD = 0.5  # a pasted mask's probability that makes a pixel part of the object
SCORE_THRESHOLD = 0.5  # the least score of an object in a label map (DSB score, predict)


@dataclasses.dataclass(frozen=True)
class Splitter:
    """How a semantic model's foreground becomes objects (``semantic_instances``)."""

    method: str = "watershed"
    threshold: float = 0.5
    min_area: int = 1
    seed_height: float = 2.0


def _resample(mask: np.ndarray, box, height: int, width: int):
    """(y slice, x slice, values): ``mask`` (m, m) bilinearly resampled over the pixels that
    ``box`` (x0, y0, x1, y1) touches, clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    m_h, m_w = mask.shape
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    if c1 <= c0 or r1 <= r0 or x1 <= x0 or y1 <= y0:
        return None
    # Pixel centre -> continuous mask coordinate (align_corners=False).
    u = (np.arange(c0, c1) + 0.5 - x0) / (x1 - x0) * m_w - 0.5
    v = (np.arange(r0, r1) + 0.5 - y0) / (y1 - y0) * m_h - 0.5
    padded = np.pad(mask, 1)  # zero outside the mask, as grid_sample's zero padding

    def taps(coord, size):
        coord = np.clip(coord + 1, 0, size + 1)  # in padded units
        low = np.clip(np.floor(coord).astype(int), 0, size)
        return low, coord - low

    u0, fu = taps(u, m_w)
    v0, fv = taps(v, m_h)
    top = padded[v0][:, u0] * (1 - fu) + padded[v0][:, u0 + 1] * fu
    bottom = padded[v0 + 1][:, u0] * (1 - fu) + padded[v0 + 1][:, u0 + 1] * fu
    values = top * (1 - fv)[:, None] + bottom * fv[:, None]
    return slice(r0, r1), slice(c0, c1), values


def paste_masks(
    boxes: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    height: int,
    width: int,
    threshold: float = 0.5,
    min_area: int = 1,
) -> tuple[np.ndarray, dict[int, float], dict[int, int]]:
    """(label map (height, width) int32, {label: score}, {label: index of its detection}) of
    detections (already filtered)."""
    labels = np.zeros((height, width), np.int32)
    kept: dict[int, float] = {}
    origin: dict[int, int] = {}
    for index in np.argsort(-np.asarray(scores), kind="stable"):
        placed = _resample(np.asarray(masks[index], np.float32), boxes[index], height, width)
        if placed is None:
            continue
        rows, cols, values = placed
        free = labels[rows, cols] == 0
        take = (values >= threshold) & free
        if take.sum() < max(min_area, 1):
            continue
        label = len(kept) + 1
        labels[rows, cols] = np.where(take, label, labels[rows, cols])
        kept[label] = float(scores[index])
        origin[label] = int(index)
    return labels, kept, origin


def semantic_instances(
    foreground: np.ndarray,
    method: str = "watershed",
    threshold: float = 0.5,
    min_area: int = 1,
    seed_height: float = 2.0,
) -> tuple[np.ndarray, dict[int, float]]:
    """(label map, {label: score}) from a foreground probability map (H, W); an instance's score
    is its mean foreground probability."""
    if method not in SPLITTERS:
        raise ValueError(f"method={method!r} is not valid; choose one of {list(SPLITTERS)}")
    mask = foreground >= threshold
    components, count = ndimage.label(mask)
    if method == "watershed" and count:
        from skimage.morphology import h_maxima
        from skimage.segmentation import watershed

        distance = ndimage.distance_transform_edt(mask)
        seeds, _ = ndimage.label(h_maxima(distance, seed_height) & mask)
        # A component with no seed (too small for an h-maximum) becomes one of its own.
        seeded = np.unique(components[seeds > 0])
        unseeded = np.isin(components, seeded, invert=True) & mask
        seeds = np.where(unseeded, components + seeds.max(initial=0), seeds)
        components = watershed(-distance, seeds, mask=mask)
    areas = np.bincount(components.ravel())
    keep = areas >= max(min_area, 1)
    keep[0] = False
    new_ids = np.zeros(len(areas), np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    sums = np.bincount(components.ravel(), weights=foreground.ravel().astype(np.float64))
    scores = {int(new_ids[v]): float(sums[v] / areas[v]) for v in np.flatnonzero(keep)}
    return new_ids[components], scores


def confident_labels(labels: np.ndarray, scores: dict[int, float], threshold: float):
    """A label map without the objects scoring below ``threshold`` (ids unchanged)."""
    low = [label for label, value in scores.items() if value < threshold]
    return np.where(np.isin(labels, low), 0, labels) if low else labels


def label_map(
    outputs, shape: tuple[int, int], splitter: Splitter | None = None, min_area: int = 1
) -> tuple[np.ndarray, dict[int, float], dict[int, int]]:
    """(label map, {label: score}, {label: index of its detection}) of one image's model outputs:
    detections pasted (objects of fewer than ``min_area`` pixels dropped), or, with a
    ``splitter``, a foreground probability map split into objects (its own ``min_area``; no
    detection indices). The one way outputs become objects, for evaluate and predict alike."""
    if splitter is None:
        return paste_masks(
            outputs["boxes"], outputs["scores"], outputs["masks"], *shape, MASK_THRESHOLD, min_area
        )
    labels, scores = semantic_instances(
        outputs, splitter.method, splitter.threshold, splitter.min_area, splitter.seed_height
    )
    return labels, scores, {}
