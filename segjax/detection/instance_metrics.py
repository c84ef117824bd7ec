"""Instance segmentation metrics of label maps (0 = background, k > 0 = instance k).

``dsb_score``: the 2018 Data Science Bowl metric. For each IoU threshold t in 0.5, 0.55, ...,
0.95, a predicted object and a true object match when their IoU exceeds t; the image's score at t
is TP / (TP + FP + FN), and its score the mean over thresholds; a dataset's score is the mean over
images. Matching is one-to-one without any search: in a label map objects do not overlap, and for
t >= 0.5 a true object can exceed IoU t with at most one predicted object (two disjoint objects
each covering more than half of the union with it would together cover more than the object).

``coco_mask_ap``: COCO-style, class-agnostic mask AP, AP50, AP75 by pycocotools (``COCOeval``,
iouType 'segm'), the true and predicted objects given as run-length encodings.
"""

import contextlib
import io
from collections.abc import Sequence

import numpy as np

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def relabel(labels: np.ndarray) -> np.ndarray:
    """The label map with its instances numbered 1..N in order of their first id."""
    ids, inverse = np.unique(labels, return_inverse=True)
    consecutive = np.arange(len(ids)) - (1 if ids[0] == 0 else 0)
    return np.where(labels > 0, consecutive[inverse.reshape(labels.shape)] + 1, 0).astype(np.int32)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(number of true objects, number of predicted objects) IoU of two label maps numbered
    1..N (``relabel``)."""
    n_true, n_pred = int(true.max(initial=0)), int(pred.max(initial=0))
    pairs = np.bincount(
        true.ravel().astype(np.int64) * (n_pred + 1) + pred.ravel(),
        minlength=(n_true + 1) * (n_pred + 1),
    ).reshape(n_true + 1, n_pred + 1)
    true_area, pred_area = pairs.sum(axis=1), pairs.sum(axis=0)
    inter = pairs[1:, 1:]
    union = true_area[1:, None] + pred_area[None, 1:] - inter
    return inter / np.maximum(union, 1)


def dsb_score(
    true: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = DSB_THRESHOLDS
) -> float:
    """The DSB 2018 score of one image (1.0 when both maps are empty)."""
    if min(thresholds) < 0.5:
        raise ValueError(f"thresholds {list(thresholds)}: one-to-one matching needs t >= 0.5")
    true, pred = relabel(true), relabel(pred)
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    scores = []
    for t in thresholds:
        tp = int(np.sum(iou > t))
        scores.append(tp / (n_true + n_pred - tp))
    return float(np.mean(scores))


def object_count(labels: np.ndarray) -> int:
    return int(len(np.unique(labels[labels > 0])))


def _objects(labels: np.ndarray):
    """(value, box xywh, area, rle) of each object of a label map. Each object is cut out by its
    bounding slice and drawn into one reused full-size Fortran buffer for pycocotools' RLE, so an
    image of N objects costs N small masks, not N full-size comparisons."""
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.min(initial=0) < 0:
        raise ValueError("label maps hold object ids >= 0")
    buffer = np.zeros(labels.shape, np.uint8, order="F")
    for index, window in enumerate(ndimage.find_objects(labels.astype(np.int64))):
        if window is None:
            continue
        value = index + 1
        mask = labels[window] == value
        buffer[window] = mask
        rle = mask_utils.encode(buffer)
        buffer[window] = 0
        rle["counts"] = rle["counts"].decode("ascii")
        rows, cols = window
        box = [
            float(cols.start),
            float(rows.start),
            float(cols.stop - cols.start),
            float(rows.stop - rows.start),
        ]
        yield value, box, float(mask.sum()), rle


def coco_mask_ap(
    true_maps: Sequence[np.ndarray],
    pred_maps: Sequence[np.ndarray],
    pred_scores: Sequence[dict[int, float]],
    max_detections: int = 1000,
) -> dict[str, float]:
    """{'mask_ap', 'mask_ap50', 'mask_ap75'} over images: ``pred_scores[i]`` maps each predicted
    object id of image i to its confidence. Up to ``max_detections`` objects per image count
    (COCO's 100 would cut DSB's images of up to 375 nuclei)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for image_id, (true, pred, scores) in enumerate(
        zip(true_maps, pred_maps, pred_scores, strict=True)
    ):
        height, width = true.shape
        images.append({"id": image_id, "height": height, "width": width})
        for _, box, area, rle in _objects(true):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": area,
                    "bbox": box,
                    "iscrowd": 0,
                }
            )
        for value, box, area, rle in _objects(pred):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": area,
                    "bbox": box,
                    "score": float(scores[int(value)]),
                }
            )
    if not annotations:
        raise ValueError("coco_mask_ap: no true objects in any image")
    if not detections:
        return {"mask_ap": 0.0, "mask_ap50": 0.0, "mask_ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "object"}],
        }
        truth.createIndex()
        predicted = truth.loadRes(detections)
        evaluation = COCOeval(truth, predicted, iouType="segm")
        evaluation.params.maxDets = [1, 100, max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
    return {
        "mask_ap": _average_precision(evaluation),
        "mask_ap50": _average_precision(evaluation, 0.5),
        "mask_ap75": _average_precision(evaluation, 0.75),
    }


def _average_precision(evaluation, iou: float | None = None) -> float:
    """COCOeval's AP over all areas at its last (largest) detection limit, averaged over its IoU
    thresholds or at ``iou``. Read from ``eval['precision']`` rather than ``stats``: COCOeval's
    summary computes AP@[.5:.95] (stats[0]) at 100 detections per image whatever ``maxDets``
    says, which would cut DSB images of up to 375 nuclei (AP50 and AP75 use the last limit)."""
    params = evaluation.params
    precision = evaluation.eval["precision"]  # [IoU threshold, recall, class, area, maxDets]
    precision = precision[:, :, :, params.areaRngLbl.index("all"), -1]
    if iou is not None:
        precision = precision[np.isclose(params.iouThrs, iou)]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else 0.0
