"""The DSB 2018 metric and COCO mask AP on hand-made label maps; masks into label maps."""

import numpy as np
import pytest

from segjax.detection import instance_metrics as im
from segjax.detection import label_maps


def nuclei():
    """A 10x10 nucleus (label 1) and a 6x6 one (label 2) on a 30x30 image."""
    labels = np.zeros((30, 30), np.int32)
    labels[2:12, 2:12] = 1
    labels[20:26, 15:21] = 2
    return labels


def test_dsb_score_perfect_empty_and_relabelled():
    true = nuclei()
    assert im.dsb_score(true, true) == 1.0
    assert im.dsb_score(true, np.zeros_like(true)) == 0.0
    assert im.dsb_score(np.zeros_like(true), np.zeros_like(true)) == 1.0
    assert im.dsb_score(true, np.where(true > 0, 7 - true, 0)) == 1.0  # ids need not agree


def test_dsb_score_of_a_nucleus_split_by_hand():
    true = nuclei()
    halves = true.copy()
    halves[2:12, 7:12] = 3  # nucleus 1 cut into two halves of 50 pixels: IoU 0.5 each
    # No half exceeds IoU 0.5: TP 1 (nucleus 2), FP 2 (halves), FN 1 (nucleus 1) at every t.
    assert im.dsb_score(true, halves) == pytest.approx(1 / 4)
    uneven = true.copy()
    uneven[2:12, 8:12] = 3  # 60 / 40 pixels: the larger part has IoU 0.6
    # t = 0.5, 0.55: TP 2, FP 1, FN 0 -> 2/3; the other eight thresholds: 1/4.
    assert im.dsb_score(true, uneven) == pytest.approx((2 * 2 / 3 + 8 / 4) / 10)


def test_dsb_score_counts_a_spurious_object_as_false_positive():
    true = nuclei()
    extra = true.copy()
    extra[0:2, 25:27] = 9
    assert im.dsb_score(true, extra) == pytest.approx(2 / 3)


def test_coco_mask_ap_perfect_and_empty():
    true = [nuclei(), nuclei()[::-1]]
    scores = [{1: 0.9, 2: 0.8}, {1: 0.7, 2: 0.6}]
    perfect = im.coco_mask_ap(true, true, scores)
    assert perfect == pytest.approx({"mask_ap": 1.0, "mask_ap50": 1.0, "mask_ap75": 1.0})
    empty = im.coco_mask_ap(true, [np.zeros_like(t) for t in true], [{}, {}])
    assert empty == {"mask_ap": 0.0, "mask_ap50": 0.0, "mask_ap75": 0.0}


def test_coco_mask_ap_ranks_by_score():
    """A false positive ranked above the true ones lowers AP; ranked below, it does not."""
    true = [nuclei()]
    pred = nuclei()
    pred[0:3, 25:28] = 3
    low = im.coco_mask_ap(true, [pred], [{1: 0.9, 2: 0.8, 3: 0.1}])["mask_ap"]
    high = im.coco_mask_ap(true, [pred], [{1: 0.5, 2: 0.4, 3: 0.9}])["mask_ap"]
    assert low == pytest.approx(1.0) and high < 0.9


def test_coco_mask_ap_counts_every_object_of_a_crowded_image():
    """150 perfect objects in one image: AP 1.0 at every IoU. (COCOeval's own summary takes
    AP@[.5:.95] at 100 detections per image, which would give about 2/3 here.)"""
    labels = np.zeros((60, 100), np.int32)
    for k in range(150):
        row, col = divmod(k, 25)
        labels[row * 10 : row * 10 + 3, col * 4 : col * 4 + 3] = k + 1
    scores = {k + 1: 1.0 - k / 300 for k in range(150)}
    ap = im.coco_mask_ap([labels], [labels], [scores])
    assert ap == pytest.approx({"mask_ap": 1.0, "mask_ap50": 1.0, "mask_ap75": 1.0})


def test_paste_masks_fills_boxes_best_first():
    full = np.ones((2, 28, 28), np.float32)
    boxes = np.array([[2, 3, 12, 9], [8, 5, 20, 15]], np.float32)
    labels, kept, origin = label_maps.paste_masks(boxes, np.array([0.6, 0.9]), full, 20, 24)
    assert kept == {1: 0.9, 2: 0.6} and origin == {1: 1, 2: 0}
    assert np.all(labels[5:15, 8:20] == 1)  # the better detection owns the overlap
    expected_second = np.zeros((20, 24), bool)
    expected_second[3:9, 2:12] = True
    expected_second[5:15, 8:20] = False
    assert np.array_equal(labels == 2, expected_second)


def test_paste_masks_resamples_the_mask_inside_the_box():
    mask = np.zeros((1, 28, 28), np.float32)
    mask[0, :, :14] = 1.0  # the left half of the box
    box = np.array([[4, 4, 24, 12]], np.float32)
    labels, _, _ = label_maps.paste_masks(box, [1.0], mask, 16, 30)
    assert labels[4:12, 4:14].all() and not labels[4:12, 14:24].any()
    assert not labels[:4].any() and not labels[12:].any()


def test_paste_masks_drops_detections_left_too_small():
    full = np.ones((2, 28, 28), np.float32)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    labels, kept, _ = label_maps.paste_masks(boxes, [0.9, 0.8], full, 12, 12, min_area=2)
    assert kept == {1: 0.9} and labels.max() == 1


@pytest.mark.parametrize("method", label_maps.SPLITTERS)
def test_semantic_instances_separates_blobs(method):
    foreground = np.zeros((40, 40), np.float32)
    yy, xx = np.mgrid[:40, :40]
    for cy, cx in ((10, 10), (10, 19), (30, 30)):  # two touching discs and one apart
        foreground[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = 0.9
    foreground[0, 39] = 0.8  # a one-pixel speck
    labels, scores = label_maps.semantic_instances(foreground, method, min_area=2)
    count = 3 if method == "watershed" else 2
    assert labels.max() == count and sorted(scores) == list(range(1, count + 1))
    assert labels[0, 39] == 0
    assert all(score == pytest.approx(0.9) for score in scores.values())
    if method == "watershed":
        assert labels[10, 10] != labels[10, 19]


def test_confident_labels_drop_low_scores_and_keep_ids():
    from segjax.instances import confident_labels

    labels = nuclei()
    out = confident_labels(labels, {1: 0.9, 2: 0.3}, 0.5)
    assert set(np.unique(out)) == {0, 1} and np.array_equal(out == 1, labels == 1)
    assert confident_labels(labels, {1: 0.9, 2: 0.6}, 0.5) is labels
