"""Detections from the box head's outputs, with static counts (torchvision's
``postprocess_detections``): class-specific boxes decoded from each proposal and clipped, the
(proposal, class) pairs above ``score_threshold`` with a non-empty box kept, NMS within each
class, the ``max_detections`` best."""

import jax
import jax.numpy as jnp

from segjax.detection import boxes as box_ops
from segjax.detection.nms import batched_nms

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # the box head's regression weights (Detectron2's)


def detect(
    class_logits,
    box_deltas,
    proposals,
    proposal_valid,
    image_size: tuple[int, int],
    score_threshold: float,
    nms_threshold: float,
    max_detections: int,
):
    """One image's detections: boxes (D, 4), scores (D,), classes (D,) (1..K), valid (D,);
    ``class_logits`` (R, K + 1) with background first, ``box_deltas`` (R, K, 4)."""
    height, width = image_size
    num_rois, num_fg = box_deltas.shape[:2]
    scores = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[:, 1:]  # (R, K)
    boxes = box_ops.decode(box_deltas, proposals[:, None, :], BOX_WEIGHTS)
    boxes = box_ops.clip(boxes, height, width).reshape(-1, 4)
    scores = scores.reshape(-1)
    classes = jnp.tile(jnp.arange(1, num_fg + 1), num_rois)
    sizes = boxes[:, 2:] - boxes[:, :2]
    valid = (
        jnp.repeat(proposal_valid, num_fg)
        & (scores > score_threshold)
        & jnp.all(sizes > 1e-2, axis=1)
    )
    index, keep = batched_nms(boxes, scores, valid, classes, nms_threshold, max_detections)
    return boxes[index], jnp.where(keep, scores[index], 0.0), classes[index], keep
