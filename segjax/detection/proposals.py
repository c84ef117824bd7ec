"""Region proposals from the RPN's outputs over a pyramid, with static counts (Detectron2's and
torchvision's procedure): the ``pre_nms`` best anchors of each level, decoded and clipped to the
image, boxes with a side below ``min_size`` left out, NMS within each level, then the
``post_nms`` best over all levels."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from segjax.detection import boxes as box_ops
from segjax.detection.nms import batched_nms


def select_proposals(
    objectness,
    deltas,
    anchors,
    level_counts: Sequence[int],
    pre_nms: int,
    post_nms: int,
    nms_threshold: float,
    image_size: tuple[int, int],
    min_size: float = 0.0,
):
    """(boxes (post_nms, 4), scores (post_nms,), valid (post_nms,)) of one image; ``objectness``
    (A,) logits, ``deltas`` (A, 4) and ``anchors`` (A, 4) in the pyramid's anchor order."""
    height, width = image_size
    picked, levels = [], []
    start = 0
    for level, count in enumerate(level_counts):
        k = min(pre_nms, count)
        _, index = jax.lax.top_k(objectness[start : start + count], k)
        picked.append(index + start)
        levels.append(jnp.full((k,), level, jnp.int32))
        start += count
    index = jnp.concatenate(picked)
    level = jnp.concatenate(levels)
    candidates = box_ops.clip(box_ops.decode(deltas[index], anchors[index]), height, width)
    scores = objectness[index]
    sizes = candidates[:, 2:] - candidates[:, :2]
    valid = jnp.all(sizes > min_size, axis=1) & jnp.all(jnp.isfinite(candidates), axis=1)
    keep_index, keep = batched_nms(candidates, scores, valid, level, nms_threshold, post_nms)
    return candidates[keep_index], jnp.where(keep, scores[keep_index], -jnp.inf), keep
