"""Anchors over the levels of a feature pyramid, in a fixed order: level by level (finest
first), then row, column and, innermost, the anchor shapes (aspect ratios) of a location. The
RPN head's outputs are flattened in the same order.

An anchor of size ``s`` and aspect ratio ``r`` (height / width) has area s^2, width s / sqrt(r)
and height s * sqrt(r), and is centred on its location's centre, ``(column + 0.5) * stride``
(Detectron2's ``offset=0.5``; torchvision centres on the corner).
"""

from collections.abc import Sequence

import numpy as np


def level_anchors(
    height: int, width: int, stride: int, size: float, ratios: Sequence[float]
) -> np.ndarray:
    """(height * width * len(ratios), 4) anchors of one level whose feature map is
    ``height`` x ``width``."""
    ratios = np.asarray(ratios, np.float64)
    half_w = size / np.sqrt(ratios) / 2
    half_h = size * np.sqrt(ratios) / 2
    ys = (np.arange(height) + 0.5) * stride
    xs = (np.arange(width) + 0.5) * stride
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    cx, cy = cx[..., None], cy[..., None]
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
    return boxes.reshape(-1, 4).astype(np.float32)


def pyramid_anchors(
    image_size: Sequence[int],
    strides: Sequence[int],
    sizes: Sequence[float],
    ratios: Sequence[float],
) -> tuple[np.ndarray, list[int]]:
    """(all anchors (A, 4), anchors per level) for an input of ``image_size`` (height, width),
    a multiple of the deepest stride; level l has stride ``strides[l]`` and size ``sizes[l]``."""
    height, width = image_size
    per_level, counts = [], []
    for stride, size in zip(strides, sizes, strict=True):
        anchors = level_anchors(-(-height // stride), -(-width // stride), stride, size, ratios)
        per_level.append(anchors)
        counts.append(len(anchors))
    return np.concatenate(per_level), counts
