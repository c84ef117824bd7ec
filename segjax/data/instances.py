"""Detection targets of one augmented example, with fixed counts (jit needs static shapes).

From an instance label map (after the crop, flips and turns that the image took) and its class
mask: every object with at least ``min_area`` pixels left in view becomes a slot, up to
``max_instances`` (the largest first where there are more; the rest count as background). Its
class is the most common non-background class of the mask under it (an object entirely on
background or ignored pixels is dropped). Slots are ordered by object id.

Returns ``instances`` int32 (H, W): slot + 1 of the object at each pixel, 0 elsewhere (dropped
objects and remnants included); ``boxes`` float32 (max_instances, 4) as (x0, y0, x1, y1) pixel
extents (x1 = last column + 1); ``classes`` int32 (max_instances,): the class id, 0 for an empty
slot.
"""

import numpy as np


def instance_targets(
    instances: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    num_classes: int,
    max_instances: int,
    min_area: int,
) -> dict[str, np.ndarray]:
    height, width = instances.shape
    counted = np.where(valid, instances, 0)
    ids, inverse = np.unique(counted, return_inverse=True)
    inverse = inverse.reshape(counted.shape)
    areas = np.bincount(inverse.ravel(), minlength=len(ids))
    # Class votes per object: (object, class) pair counts of the non-background pixels.
    scored = valid & (mask > 0) & (mask < num_classes)
    votes = np.zeros((len(ids), num_classes), np.int64)
    np.add.at(votes, (inverse[scored], mask[scored].astype(np.int64)), 1)
    classes = votes.argmax(axis=1)
    keep = (ids > 0) & (areas >= max(min_area, 1)) & (votes.max(axis=1) > 0)
    candidates = np.flatnonzero(keep)
    if len(candidates) > max_instances:  # the largest objects, then back in id order
        by_size = candidates[np.argsort(-areas[candidates], kind="stable")]
        candidates = np.sort(by_size[:max_instances])
    slot_of = np.zeros(len(ids), np.int32)
    slot_of[candidates] = np.arange(1, len(candidates) + 1)
    slots = slot_of[inverse]
    boxes = np.zeros((max_instances, 4), np.float32)
    out_classes = np.zeros(max_instances, np.int32)
    if len(candidates):
        ys, xs = np.nonzero(slots)
        owner = slots[ys, xs] - 1
        n = len(candidates)
        x0 = np.full(n, width, np.int64)
        y0 = np.full(n, height, np.int64)
        x1 = np.zeros(n, np.int64)
        y1 = np.zeros(n, np.int64)
        np.minimum.at(x0, owner, xs)
        np.minimum.at(y0, owner, ys)
        np.maximum.at(x1, owner, xs + 1)
        np.maximum.at(y1, owner, ys + 1)
        boxes[:n] = np.stack([x0, y0, x1, y1], axis=1)
        out_classes[:n] = classes[candidates]
    return {"instances": slots, "boxes": boxes, "classes": out_classes}
