"""Greedy non-maximum suppression with static shapes, for use under jit.

Boxes are visited in descending score order; a box is kept unless a kept, higher-scoring box
overlaps it by more than ``iou_threshold``. Exactly torchvision's ``nms`` (ties broken by the
lower index, as a stable sort does), but the result is a fixed number of indices with a flag.
"""

import jax
import jax.numpy as jnp

from segjax.detection.boxes import pairwise_iou


def nms(boxes, scores, valid, iou_threshold: float, max_outputs: int):
    """(indices (max_outputs,), keep (max_outputs,) bool): the kept boxes, best first; ``keep``
    is False in the slots beyond the number kept (their index is 0). ``valid`` (N,) marks the
    boxes that take part."""
    order = jnp.argsort(-jnp.where(valid, scores, -jnp.inf), stable=True)
    sorted_boxes = boxes[order]
    sorted_valid = valid[order]
    overlaps = pairwise_iou(sorted_boxes, sorted_boxes) > iou_threshold
    n = boxes.shape[0]
    position = jnp.arange(n)

    def visit(kept, box):
        # Box i survives if no kept box before it overlaps it. Its row of overlaps comes in as
        # the scan's slice, not by indexing: under vmap that indexing is a gather which jax2onnx
        # 0.13 converts wrongly inside a loop (segjax.export); the result is the same.
        overlaps_i, valid_i, i = box
        suppressed = jnp.any(kept & overlaps_i & (position < i))
        return kept.at[i].set(valid_i & ~suppressed), None

    kept, _ = jax.lax.scan(visit, jnp.zeros(n, bool), (overlaps, sorted_valid, position))
    # The kept positions in order, then the rest: a stable sort on ~kept.
    positions = jnp.argsort(~kept, stable=True)[:max_outputs]
    count = jnp.sum(kept)
    keep = jnp.arange(max_outputs) < count
    return jnp.where(keep, order[positions], 0), keep


def batched_nms(boxes, scores, valid, groups, iou_threshold: float, max_outputs: int):
    """NMS within each group (class or pyramid level) at once: boxes of different groups are
    moved apart so that they never overlap (torchvision's ``batched_nms`` trick)."""
    span = jnp.max(jnp.where(valid[:, None], jnp.abs(boxes), 0)) + 1
    shifted = boxes + (groups.astype(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, valid, iou_threshold, max_outputs)
