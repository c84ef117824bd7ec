"""Mask R-CNN's operations against references: boxes, anchors, NMS and RoIAlign."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.detection import anchors, boxes, nms, roi_align
from tests import detection_reference as ref


def test_box_encoding_round_trip():
    rng = np.random.default_rng(0)
    reference = ref.random_boxes(rng, 50, 64, 64, min_size=2)
    target = ref.random_boxes(rng, 50, 64, 64, min_size=2)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        deltas = boxes.encode(target, reference, weights)
        np.testing.assert_allclose(boxes.decode(deltas, reference, weights), target, atol=1e-4)
    # A box equal to its reference has zero deltas; doubling the width is log(2).
    np.testing.assert_allclose(boxes.encode(reference, reference), 0, atol=1e-6)
    wide = reference.copy()
    wide[:, 2] = reference[:, 0] + 2 * (reference[:, 2] - reference[:, 0])
    deltas = np.asarray(boxes.encode(wide, reference))
    np.testing.assert_allclose(deltas[:, 2], np.log(2), atol=1e-5)
    np.testing.assert_allclose(deltas[:, 0], 0.5, atol=1e-5)  # the centre moves half a width


def test_decode_clamps_huge_scales():
    out = boxes.decode(jnp.array([[0.0, 0.0, 100.0, 100.0]]), jnp.array([[0.0, 0.0, 10.0, 10.0]]))
    assert np.all(np.isfinite(out)) and float(out[0, 2] - out[0, 0]) == pytest.approx(
        10 * 1000 / 16
    )


def test_pairwise_iou_matches_loop():
    rng = np.random.default_rng(1)
    a, b = ref.random_boxes(rng, 9, 20, 20), ref.random_boxes(rng, 7, 20, 20)
    expected = [[ref.iou(x, y) for y in b] for x in a]
    np.testing.assert_allclose(boxes.pairwise_iou(a, b), expected, rtol=1e-5, atol=1e-7)
    degenerate = np.zeros((1, 4), np.float32)
    assert float(boxes.pairwise_iou(degenerate, degenerate)[0, 0]) == 0.0


def test_anchor_counts_and_positions_per_level():
    strides, sizes, ratios = (4, 8, 16, 32, 64), (8, 16, 32, 64, 128), (0.5, 1.0, 2.0)
    all_anchors, counts = anchors.pyramid_anchors((96, 128), strides, sizes, ratios)
    expected = [(-(-96 // s)) * (-(-128 // s)) * 3 for s in strides]
    assert counts == expected == [2304, 576, 144, 36, 12]
    assert all_anchors.shape == (sum(expected), 4)
    # The first anchors sit on the first location of the finest level, one per ratio.
    first = all_anchors[:3]
    np.testing.assert_allclose((first[:, 0] + first[:, 2]) / 2, 2.0)
    np.testing.assert_allclose((first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1]), 64.0)
    np.testing.assert_allclose(
        (first[:, 3] - first[:, 1]) / (first[:, 2] - first[:, 0]), ratios, rtol=1e-6
    )
    # The last anchor of the second level is centred on its last location.
    last = all_anchors[counts[0] + counts[1] - 1]
    np.testing.assert_allclose([(last[0] + last[2]) / 2, (last[1] + last[3]) / 2], [124, 92])


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_greedy_reference(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    centres = rng.uniform(0, 40, (6, 2))
    # Clusters of overlapping boxes, some exact ties in score.
    pick = rng.integers(0, 6, 60)
    xy = centres[pick] + rng.normal(0, 2, (60, 2))
    wh = rng.uniform(4, 12, (60, 2))
    box = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    score = np.round(rng.uniform(0, 1, 60), 1).astype(np.float32)
    valid = rng.uniform(size=60) > 0.1
    indices, keep = jax.jit(nms.nms, static_argnums=(3, 4))(box, score, valid, threshold, 40)
    got = [int(i) for i, k in zip(indices, keep, strict=True) if k]
    live = np.flatnonzero(valid)
    expected = [int(live[i]) for i in ref.greedy_nms(box[live], score[live], threshold)]
    assert got == expected[:40]
    assert not np.any(np.asarray(keep)[len(got) :])


def test_batched_nms_keeps_overlapping_boxes_of_other_groups():
    box = jnp.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], jnp.float32)
    score = jnp.array([0.9, 0.8, 0.7])
    indices, keep = nms.batched_nms(box, score, jnp.ones(3, bool), jnp.array([0, 0, 1]), 0.5, 3)
    assert [int(i) for i, k in zip(indices, keep, strict=True) if k] == [0, 2]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [1, 2])
def test_roi_align_matches_loop_reference(aligned, ratio):
    rng = np.random.default_rng(ratio)
    feature = rng.normal(size=(9, 12, 4)).astype(np.float32)
    # Boxes inside, across the border, tiny, and wholly outside the map.
    box = np.concatenate(
        [
            ref.random_boxes(rng, 12, 18, 24, min_size=0.3, max_size=20),
            np.array([[-10, -10, -4, -4], [30, 20, 40, 30], [5, 5, 5.2, 5.1]], np.float32),
        ]
    )
    got = roi_align.roi_align(jnp.asarray(feature), box, 0.5, 5, ratio, aligned)
    expected = ref.roi_align_loop(feature, box, 0.5, 5, ratio, aligned)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_roi_align_matches_stored_torchvision_outputs():
    """torchvision.ops.roi_align's outputs, stored by ``python -m tests.detection_reference``."""
    stored = np.load(ref.FIXTURE)
    for aligned in (True, False):
        for ratio in (1, 2, 3):
            got = roi_align.roi_align(
                jnp.asarray(stored["feature"]), stored["boxes"], 0.25, 7, ratio, aligned
            )
            np.testing.assert_allclose(
                got, stored[f"aligned{int(aligned)}_ratio{ratio}"], rtol=1e-5, atol=1e-5
            )


def test_roi_align_matches_live_torchvision():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(5)
    feature = rng.normal(size=(2, 3, 10, 14)).astype(np.float32)
    box = ref.random_boxes(rng, 10, 40, 56, max_size=30)
    for aligned in (True, False):
        expected = torchvision.ops.roi_align(
            torch.from_numpy(feature[1:]), [torch.from_numpy(box)], 6, 0.25, 2, aligned
        ).numpy()
        got = roi_align.roi_align(
            jnp.asarray(feature[1].transpose(1, 2, 0)), box, 0.25, 6, 2, aligned
        )
        np.testing.assert_allclose(got, expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_multilevel_roi_align_reads_each_box_from_its_level():
    rng = np.random.default_rng(3)
    levels = [rng.normal(size=(16 // s, 20 // s, 2)).astype(np.float32) for s in (1, 2, 4)]
    box = ref.random_boxes(rng, 9, 16 * 4, 20 * 4, min_size=4, max_size=40)
    level = np.arange(9) % 3
    scales = [0.25, 0.125, 0.0625]
    got = roi_align.multilevel_roi_align(
        [jnp.asarray(f) for f in levels], box, jnp.asarray(level), scales, 4, 2
    )
    for r in range(9):
        expected = ref.roi_align_loop(
            levels[level[r]], box[r : r + 1], scales[level[r]], 4, 2, True
        )
        np.testing.assert_allclose(got[r : r + 1], expected, rtol=1e-5, atol=1e-5)


def test_level_of_boxes_follows_fpn_equation():
    sizes = np.array([10, 111, 112, 224, 447, 448, 2000], np.float32)
    box = np.stack([np.zeros(7), np.zeros(7), sizes, sizes], axis=1)
    got = roi_align.level_of_boxes(jnp.asarray(box), 2, 5)
    assert list(np.asarray(got)) == [0, 0, 1, 2, 2, 3, 3]
