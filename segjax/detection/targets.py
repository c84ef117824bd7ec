"""Training targets of Mask R-CNN with fixed counts: IoU matching, balanced sampling, box
regression targets and mask targets (Detectron2's ``Matcher``, ``subsample_labels`` and
``mask_rcnn_loss`` targets, with static shapes)."""

import jax
import jax.numpy as jnp

from segjax.detection import boxes as box_ops
from segjax.detection.roi_align import _axis_samples

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


def match(iou, gt_valid, low: float, high: float, allow_low_quality: bool):
    """(matched gt index (N,), label (N,)) for N boxes against M true boxes, ``iou`` (N, M):
    POSITIVE where the best IoU >= ``high``, NEGATIVE below ``low``, IGNORED between; with
    ``allow_low_quality`` also POSITIVE: each true box's best-overlapping boxes (ties included,
    Detectron2's and torchvision's rule), so that every true box has a positive. No true box:
    all NEGATIVE."""
    iou = jnp.where(gt_valid[None, :], iou, -1.0)
    best = jnp.max(iou, axis=1)
    matched = jnp.argmax(iou, axis=1)
    label = jnp.where(best >= high, POSITIVE, jnp.where(best < low, NEGATIVE, IGNORED))
    if allow_low_quality:
        best_per_gt = jnp.max(iou, axis=0)  # (M,)
        is_best = (iou == best_per_gt[None, :]) & gt_valid[None, :] & (best_per_gt[None, :] > 0)
        label = jnp.where(jnp.any(is_best, axis=1), POSITIVE, label)
    return matched, label


def _random_rank(rng, members):
    """The rank (0, 1, ...) of each member in a random order; non-members rank last."""
    key = jnp.where(members, jax.random.uniform(rng, members.shape), 2.0)
    order = jnp.argsort(key)
    return jnp.zeros(members.shape, jnp.int32).at[order].set(jnp.arange(members.shape[0]))


def sample(rng, label, num_samples: int, positive_fraction: float):
    """(positive (N,), negative (N,)) boolean: up to ``num_samples * positive_fraction``
    random positives, and random negatives to make ``num_samples`` in all where there are
    enough."""
    pos_rng, neg_rng = jax.random.split(rng)
    positive = label == POSITIVE
    negative = label == NEGATIVE
    max_positive = int(num_samples * positive_fraction)
    chosen_pos = positive & (_random_rank(pos_rng, positive) < max_positive)
    num_negative = num_samples - jnp.sum(chosen_pos)
    chosen_neg = negative & (_random_rank(neg_rng, negative) < num_negative)
    return chosen_pos, chosen_neg


def sampled_slots(chosen_pos, chosen_neg, num_samples: int):
    """(indices (num_samples,), is_positive, is_sampled): the sampled boxes in fixed slots,
    positives first (so the first ``num_samples * positive_fraction`` slots hold every sampled
    positive), then negatives, then unsampled filler (index 0 where there are fewer boxes than
    slots)."""
    priority = jnp.where(chosen_pos, 0, jnp.where(chosen_neg, 1, 2))
    order = jnp.argsort(priority, stable=True)[:num_samples]
    positive, sampled = chosen_pos[order], (chosen_pos | chosen_neg)[order]
    short = num_samples - order.shape[0]
    if short > 0:
        order = jnp.concatenate([order, jnp.zeros(short, order.dtype)])
        positive = jnp.concatenate([positive, jnp.zeros(short, bool)])
        sampled = jnp.concatenate([sampled, jnp.zeros(short, bool)])
    return order, positive, sampled


def box_targets(gt_boxes, reference, weights):
    """Regression targets; a degenerate reference (zero size) gives 0 instead of inf."""
    size = jnp.minimum(reference[..., 2] - reference[..., 0], reference[..., 3] - reference[..., 1])
    safe = jnp.where(size[..., None] > 0, reference, jnp.asarray([0.0, 0.0, 1.0, 1.0]))
    gt_size = jnp.minimum(gt_boxes[..., 2] - gt_boxes[..., 0], gt_boxes[..., 3] - gt_boxes[..., 1])
    gt_safe = jnp.where(gt_size[..., None] > 0, gt_boxes, safe)
    return box_ops.encode(gt_safe, safe, weights)


def mask_targets(instances, boxes, slot_ids, size: int, sampling_ratio: int = 2):
    """(R, size, size) float 0/1: the true object ``slot_ids[r]`` (ids of the ``instances`` map
    (H, W)) seen through box r, as RoIAlign (aligned) of its binary mask thresholded at 0.5."""
    height, width = instances.shape
    flat = instances.reshape(-1)

    def one(box, slot_id):
        x0, y0 = box[0] - 0.5, box[1] - 0.5
        rows, row_w = _axis_samples(y0, box[3] - box[1], size, sampling_ratio, height)
        cols, col_w = _axis_samples(x0, box[2] - box[0], size, sampling_ratio, width)
        index = rows[:, None, :, None] * width + cols[None, :, None, :]
        weight = row_w[:, None, :, None] * col_w[None, :, None, :]
        inside = (flat[index] == slot_id).astype(jnp.float32)
        values = jnp.sum(inside * weight, axis=(2, 3))
        values = values.reshape(size, sampling_ratio, size, sampling_ratio).mean(axis=(1, 3))
        return (values >= 0.5).astype(jnp.float32)

    return jax.vmap(one)(boxes, slot_ids)
