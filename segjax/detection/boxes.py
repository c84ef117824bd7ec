"""Boxes as (x0, y0, x1, y1) in pixel units, pixel ``i`` covering [i, i + 1) (the convention of
torchvision and Detectron2; an instance's box is (min x, min y, max x + 1, max y + 1)).

Box regression uses Faster R-CNN's deltas (dx, dy, dw, dh) relative to a reference box, scaled
by ``weights`` (Detectron2: (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the box head). Decoded
sizes are clamped at log(1000 / 16) as in both libraries, so a wild delta cannot overflow.
"""

import math

import jax.numpy as jnp

SCALE_CLAMP = math.log(1000.0 / 16)


def area(boxes):
    return jnp.maximum(boxes[..., 2] - boxes[..., 0], 0) * jnp.maximum(
        boxes[..., 3] - boxes[..., 1], 0
    )


def pairwise_iou(a, b):
    """(N, M) intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4); 0 where the union
    is empty."""
    top_left = jnp.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.maximum(bottom_right - top_left, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0.0)


def encode(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    """Deltas that take ``reference`` boxes to ``boxes`` (both (..., 4), positive sizes)."""
    wx, wy, ww, wh = weights
    ref_w = reference[..., 2] - reference[..., 0]
    ref_h = reference[..., 3] - reference[..., 1]
    ref_x = reference[..., 0] + 0.5 * ref_w
    ref_y = reference[..., 1] + 0.5 * ref_h
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    x = boxes[..., 0] + 0.5 * w
    y = boxes[..., 1] + 0.5 * h
    return jnp.stack(
        [
            wx * (x - ref_x) / ref_w,
            wy * (y - ref_y) / ref_h,
            ww * jnp.log(w / ref_w),
            wh * jnp.log(h / ref_h),
        ],
        axis=-1,
    )


def decode(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    """The boxes that ``deltas`` make of ``reference`` boxes (inverse of ``encode``)."""
    wx, wy, ww, wh = weights
    ref_w = reference[..., 2] - reference[..., 0]
    ref_h = reference[..., 3] - reference[..., 1]
    ref_x = reference[..., 0] + 0.5 * ref_w
    ref_y = reference[..., 1] + 0.5 * ref_h
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, SCALE_CLAMP)
    dh = jnp.minimum(deltas[..., 3] / wh, SCALE_CLAMP)
    x, y = ref_x + dx * ref_w, ref_y + dy * ref_h
    w, h = ref_w * jnp.exp(dw), ref_h * jnp.exp(dh)
    return jnp.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=-1)


def clip(boxes, height, width):
    """Boxes clipped to an image of ``height`` x ``width`` (scalars or arrays that broadcast)."""
    x0 = jnp.clip(boxes[..., 0], 0, width)
    y0 = jnp.clip(boxes[..., 1], 0, height)
    x1 = jnp.clip(boxes[..., 2], 0, width)
    y1 = jnp.clip(boxes[..., 3], 0, height)
    return jnp.stack([x0, y0, x1, y1], axis=-1)
