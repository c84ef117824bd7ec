"""RoIAlign (He et al., 2017) in JAX, with the sampling of torchvision's ``roi_align`` and
Detectron2's ``ROIAlign``: each output bin averages ``sampling_ratio``^2 bilinear samples at the
centres of a regular grid in the bin; a sample more than one pixel outside the feature map is 0,
one within a pixel of the border reads the border. ``aligned=True`` shifts the box by half a
pixel so that the box's continuous coordinates map onto pixel centres (Detectron2's default).

The sampling is fixed (``sampling_ratio`` > 0; the adaptive ``0`` of the PyTorch libraries would
give a shape that depends on the box), and the bilinear weights are separable, so each output is
one gather of 4 * sampling_ratio^2 feature rows and a weighted sum, which XLA fuses.

Multi-level: the levels of a pyramid are flattened into one table of rows, and each box reads
from the level it is assigned to (``level_of_boxes``, FPN paper eq. 1).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from segjax.detection.boxes import area


def level_of_boxes(
    boxes,
    min_level: int,
    max_level: int,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
):
    """Pyramid level (min_level..max_level, as an offset from min_level) of each box:
    floor(canonical_level + log2(sqrt(area) / canonical_size)), as in the FPN paper and
    Detectron2."""
    size = jnp.sqrt(jnp.maximum(area(boxes), 1e-8))
    level = jnp.floor(canonical_level + jnp.log2(size / canonical_size + 1e-8))
    return (jnp.clip(level, min_level, max_level) - min_level).astype(jnp.int32)


def _axis_samples(start, length, bins: int, ratio: int, size):
    """Rows (or columns) of the two bilinear taps of every sample along one axis, and their
    weights: (bins * ratio, 2) each."""
    step = length / bins
    offsets = (jnp.arange(bins * ratio) + 0.5) / ratio  # in bins
    coords = start + offsets * step
    inside = (coords >= -1.0) & (coords <= size)
    coords = jnp.maximum(coords, 0.0)
    low = jnp.floor(coords).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    frac = jnp.where(at_edge, 0.0, coords - low)
    weights = jnp.stack([1.0 - frac, frac], axis=-1) * inside[:, None]
    return jnp.stack([low, high], axis=-1), weights


def multilevel_roi_align(
    features: Sequence[jax.Array],
    boxes,
    levels,
    scales: Sequence[float],
    output_size: int,
    sampling_ratio: int = 2,
    aligned: bool = True,
):
    """(R, output_size, output_size, C) features of ``boxes`` (R, 4) in image pixels, box r read
    from ``features[levels[r]]`` (H_l, W_l, C) whose pixels are ``1 / scales[l]`` image pixels."""
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio={sampling_ratio}: needs a fixed positive value")
    heights = jnp.asarray([f.shape[0] for f in features], jnp.int32)
    widths = jnp.asarray([f.shape[1] for f in features], jnp.int32)
    sizes = [f.shape[0] * f.shape[1] for f in features]
    starts = jnp.asarray([sum(sizes[:i]) for i in range(len(sizes))], jnp.int32)
    table = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in features])
    scale = jnp.asarray(scales, jnp.float32)[levels]
    height, width, start = heights[levels], widths[levels], starts[levels]
    shift = 0.5 if aligned else 0.0
    x0 = boxes[:, 0] * scale - shift
    y0 = boxes[:, 1] * scale - shift
    roi_w = (boxes[:, 2] - boxes[:, 0]) * scale
    roi_h = (boxes[:, 3] - boxes[:, 1]) * scale
    if not aligned:  # the original RoIAlign forces boxes to at least one pixel
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)

    def one_box(x0, y0, roi_w, roi_h, height, width, start):
        rows, row_w = _axis_samples(y0, roi_h, output_size, sampling_ratio, height)
        cols, col_w = _axis_samples(x0, roi_w, output_size, sampling_ratio, width)
        index = start + rows[:, None, :, None] * width + cols[None, :, None, :]  # (Sy, Sx, 2, 2)
        weight = row_w[:, None, :, None] * col_w[None, :, None, :]
        values = jnp.sum(table[index] * weight[..., None].astype(table.dtype), axis=(2, 3))
        n = output_size
        values = values.reshape(n, sampling_ratio, n, sampling_ratio, -1)
        return jnp.mean(values, axis=(1, 3))

    return jax.vmap(one_box)(x0, y0, roi_w, roi_h, height, width, start)


def roi_align(
    features,
    boxes,
    spatial_scale: float,
    output_size: int,
    sampling_ratio: int = 2,
    aligned: bool = True,
):
    """(R, output_size, output_size, C) RoIAlign of one feature map (H, W, C)."""
    levels = jnp.zeros(boxes.shape[0], jnp.int32)
    return multilevel_roi_align(
        [features], boxes, levels, [spatial_scale], output_size, sampling_ratio, aligned
    )
