"""NumPy reference implementations of the detection operations, written as loops straight from
their definitions (torchvision's C++ ``roi_align`` kernel, greedy NMS), and the script that
stores torchvision's own RoIAlign outputs as a fixture:

    python -m tests.detection_reference   # needs torch and torchvision (pip install -e '.[bench]')
"""

import os

import numpy as np

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "detection", "roi_align_torch.npz")


def bilinear(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision's ``bilinear_interpolate`` for one sample of a (H, W, C) map."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feature[y_low, x_low]
        + hy * lx * feature[y_low, x_high]
        + ly * hx * feature[y_high, x_low]
        + ly * lx * feature[y_high, x_high]
    )


def roi_align_loop(feature, boxes, spatial_scale, output_size, sampling_ratio, aligned):
    """(R, n, n, C): each bin the mean of sampling_ratio^2 bilinear samples, by loops."""
    out = np.zeros((len(boxes), output_size, output_size, feature.shape[-1]))
    offset = 0.5 if aligned else 0.0
    for r, (x0, y0, x1, y1) in enumerate(boxes):
        start_x, start_y = x0 * spatial_scale - offset, y0 * spatial_scale - offset
        roi_w = x1 * spatial_scale - offset - start_x
        roi_h = y1 * spatial_scale - offset - start_y
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_w, bin_h = roi_w / output_size, roi_h / output_size
        for i in range(output_size):
            for j in range(output_size):
                total = 0.0
                for iy in range(sampling_ratio):
                    y = start_y + i * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                    for ix in range(sampling_ratio):
                        x = start_x + j * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                        total = total + bilinear(feature, y, x)
                out[r, i, j] = total / sampling_ratio**2
    return out


def iou(a, b) -> float:
    inter_w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    inter_h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def greedy_nms(boxes, scores, threshold) -> list[int]:
    """Indices kept by greedy NMS, best first (ties: lower index first)."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


def random_boxes(rng, count, height, width, min_size=0.5, max_size=None):
    """Boxes with corners inside and a little outside an image of ``height`` x ``width``."""
    max_size = max_size or max(height, width)
    x0 = rng.uniform(-2, width, count)
    y0 = rng.uniform(-2, height, count)
    w = rng.uniform(min_size, max_size, count)
    h = rng.uniform(min_size, max_size, count)
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)


def make_torchvision_fixture() -> None:
    import torch
    from torchvision.ops import roi_align

    rng = np.random.default_rng(0)
    feature = rng.normal(size=(13, 11, 3)).astype(np.float32)
    boxes = random_boxes(rng, 24, 13 * 4, 11 * 4, max_size=30)
    cases = {"feature": feature, "boxes": boxes}
    for aligned in (True, False):
        for ratio in (1, 2, 3):
            out = roi_align(
                torch.from_numpy(feature.transpose(2, 0, 1)[None]),
                [torch.from_numpy(boxes)],
                output_size=7,
                spatial_scale=0.25,
                sampling_ratio=ratio,
                aligned=aligned,
            )
            cases[f"aligned{int(aligned)}_ratio{ratio}"] = out.numpy().transpose(0, 2, 3, 1)
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    np.savez_compressed(FIXTURE, **cases)
    print(f"wrote {FIXTURE} (torch {torch.__version__})")


if __name__ == "__main__":
    make_torchvision_fixture()
