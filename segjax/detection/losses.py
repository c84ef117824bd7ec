"""Mask R-CNN's five losses, pure functions of the outputs and targets that
``MaskRCNN.train_outputs`` returns (normalised as in Detectron2):

- ``rpn_objectness``: binary cross-entropy over the sampled anchors, summed and divided by the
  number of sampling slots (images x ``rpn_batch_per_image``);
- ``rpn_box``: smooth L1 (beta 1/9, torchvision's) of the positive anchors' deltas, same divisor;
- ``roi_class``: softmax cross-entropy over the sampled RoIs, averaged over them;
- ``roi_box``: smooth L1 (beta 1) of the positive RoIs' deltas for their true class, divided
  by the number of sampled RoIs;
- ``mask``: per-pixel binary cross-entropy of the positive RoIs' masks in their true class,
  averaged over their pixels.
The total is their sum.
"""

import jax.numpy as jnp
import optax

LOSS_NAMES = ("rpn_objectness", "rpn_box", "roi_class", "roi_box", "mask")


def smooth_l1(x, beta: float):
    absolute = jnp.abs(x)
    return jnp.where(absolute < beta, 0.5 * x * x / beta, absolute - 0.5 * beta)


def _mean(values, weights):
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def maskrcnn_loss(outputs: dict) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    f32 = jnp.float32
    rpn_pos = outputs["rpn_positive"].astype(f32)
    rpn_sampled = outputs["rpn_sampled"].astype(f32)
    rpn_slots = outputs["rpn_slots"]
    rpn_objectness = (
        jnp.sum(optax.sigmoid_binary_cross_entropy(outputs["rpn_logits"], rpn_pos) * rpn_sampled)
        / rpn_slots
    )
    rpn_box = (
        jnp.sum(
            smooth_l1(outputs["rpn_deltas"] - outputs["rpn_targets"], 1.0 / 9).sum(-1) * rpn_pos
        )
        / rpn_slots
    )
    roi_sampled = outputs["roi_sampled"].astype(f32)
    roi_class = _mean(
        optax.softmax_cross_entropy_with_integer_labels(
            outputs["roi_logits"], outputs["roi_classes"]
        ),
        roi_sampled,
    )
    roi_pos = outputs["roi_positive"].astype(f32)
    roi_box = jnp.sum(
        smooth_l1(outputs["roi_deltas"] - outputs["roi_targets"], 1.0).sum(-1) * roi_pos
    ) / jnp.maximum(jnp.sum(roi_sampled), 1.0)
    mask_pos = outputs["mask_positive"].astype(f32)
    pixel = optax.sigmoid_binary_cross_entropy(outputs["mask_logits"], outputs["mask_targets"])
    mask = _mean(pixel.mean(axis=(-2, -1)), mask_pos)
    parts = {
        "rpn_objectness": rpn_objectness,
        "rpn_box": rpn_box,
        "roi_class": roi_class,
        "roi_box": roi_box,
        "mask": mask,
    }
    return sum(parts.values()), parts
