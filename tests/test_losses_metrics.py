"""Losses and metrics against NumPy references and hand-computed values, with padding and the
ignore label."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses, metrics

RNG = np.random.default_rng(0)
B, H, W, C = 2, 5, 6, 4
LOGITS = RNG.normal(0, 2, (B, H, W, C)).astype(np.float32)
LABELS = RNG.integers(0, C, (B, H, W)).astype(np.int32)
VALID = RNG.random((B, H, W)) > 0.25  # a quarter padding / ignored


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_probs(logits):
    if logits.shape[-1] == 1:
        p = 1 / (1 + np.exp(-logits))
        return np.concatenate([1 - p, p], -1)
    return np_softmax(logits)


def test_cross_entropy_matches_numpy():
    log_p = np.log(np_softmax(LOGITS.astype(np.float64)))
    nll = -np.take_along_axis(log_p, LABELS[..., None], -1)[..., 0]
    expected = nll[VALID].mean()
    np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS, VALID), expected, rtol=1e-5)


def test_cross_entropy_by_hand():
    logits = np.log(np.array([[[[1.0, 3.0]]]], np.float32))  # p = (0.25, 0.75)
    labels = np.array([[[1]]])
    valid = np.ones((1, 1, 1), bool)
    np.testing.assert_allclose(
        losses.cross_entropy(logits, labels, valid), -np.log(0.75), rtol=1e-6
    )
    # label smoothing 0.2 over 2 classes: targets (0.1, 0.9)
    smoothed = -(0.1 * np.log(0.25) + 0.9 * np.log(0.75))
    np.testing.assert_allclose(
        losses.cross_entropy(logits, labels, valid, label_smoothing=0.2), smoothed, rtol=1e-6
    )


def test_cross_entropy_class_weights_and_ignored_pixels():
    weights = np.array([1.0, 2.0, 0.5, 3.0])
    log_p = np.log(np_softmax(LOGITS.astype(np.float64)))
    nll = -np.take_along_axis(log_p, LABELS[..., None], -1)[..., 0]
    w = weights[LABELS] * VALID
    np.testing.assert_allclose(
        losses.cross_entropy(LOGITS, LABELS, VALID, class_weights=weights),
        (nll * w).sum() / w.sum(),
        rtol=1e-5,
    )
    # Changing the logits or labels of invalid pixels changes nothing.
    scrambled = np.where(VALID[..., None], LOGITS, 100.0)
    np.testing.assert_allclose(
        losses.cross_entropy(scrambled, np.where(VALID, LABELS, 3), VALID),
        losses.cross_entropy(LOGITS, LABELS, VALID),
        rtol=1e-6,
    )


def test_ignore_mask():
    labels = np.array([0, 255, 2])
    np.testing.assert_array_equal(
        losses.ignore_mask(labels, np.ones(3, bool), 255), [True, False, True]
    )


def test_binary_cross_entropy_matches_numpy():
    logits = LOGITS[..., :1]
    labels = LABELS % 2
    p = 1 / (1 + np.exp(-logits[..., 0].astype(np.float64)))
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    np.testing.assert_allclose(
        losses.binary_cross_entropy(logits, labels, VALID), bce[VALID].mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.cross_entropy(logits, labels, VALID), bce[VALID].mean(), rtol=1e-5
    )  # cross_entropy of a binary model is BCE


def np_tversky(logits, labels, valid, alpha, beta, smooth=1.0):
    p = np_probs(logits.astype(np.float64)) * valid[..., None]
    t = np.eye(p.shape[-1])[labels] * valid[..., None]
    tp = (p * t).sum((0, 1, 2))
    fp = (p * (1 - t)).sum((0, 1, 2))
    fn = ((1 - p) * t * valid[..., None]).sum((0, 1, 2))
    return 1 - np.mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))


@pytest.mark.parametrize("channels", [C, 1])
def test_region_losses_match_numpy(channels):
    logits, labels = LOGITS[..., :channels], LABELS % max(channels, 2)
    np.testing.assert_allclose(
        losses.dice(logits, labels, VALID), np_tversky(logits, labels, VALID, 0.5, 0.5), rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.jaccard(logits, labels, VALID),
        np_tversky(logits, labels, VALID, 1.0, 1.0),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        losses.tversky(logits, labels, VALID, 0.3, 0.7),
        np_tversky(logits, labels, VALID, 0.3, 0.7),
        rtol=1e-5,
    )


def test_dice_of_a_perfect_prediction_is_near_zero():
    logits = 50.0 * (np.eye(C)[LABELS] - 0.5)
    assert float(losses.dice(logits, LABELS, VALID)) < 1e-6
    assert float(losses.jaccard(logits, LABELS, VALID)) < 1e-6


def test_focal_matches_numpy_and_is_cross_entropy_at_gamma_zero():
    p = np_softmax(LOGITS.astype(np.float64))
    pt = np.take_along_axis(p, LABELS[..., None], -1)[..., 0]
    expected = (-((1 - pt) ** 2) * np.log(pt))[VALID].mean()
    np.testing.assert_allclose(losses.focal(LOGITS, LABELS, VALID), expected, rtol=1e-5)
    np.testing.assert_allclose(
        losses.focal(LOGITS, LABELS, VALID, gamma=0.0),
        losses.cross_entropy(LOGITS, LABELS, VALID),
        rtol=1e-5,
    )


def np_lovasz_softmax(logits, labels, valid):
    """The reference algorithm: drop invalid pixels, then per present class sort the errors."""
    p = np_probs(logits.astype(np.float64))[valid]
    y = labels[valid]
    values = []
    for c in range(p.shape[-1]):
        fg = (y == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - p[:, c])
        order = np.argsort(-errors, kind="stable")
        fg_sorted = fg[order]
        intersection = fg_sorted.sum() - np.cumsum(fg_sorted)
        union = fg_sorted.sum() + np.cumsum(1 - fg_sorted)
        jac = 1 - intersection / union
        grad = np.concatenate([jac[:1], np.diff(jac)])
        values.append(np.dot(errors[order], grad))
    return np.mean(values)


@pytest.mark.parametrize("channels", [C, 1])
def test_lovasz_softmax_matches_the_reference(channels):
    logits, labels = LOGITS[..., :channels], LABELS % max(channels, 2)
    np.testing.assert_allclose(
        losses.lovasz_softmax(logits, labels, VALID),
        np_lovasz_softmax(logits, labels, VALID),
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_every_loss_has_finite_gradients(name):
    channels = 1 if name == "binary_cross_entropy" else C
    labels = LABELS % max(channels, 2)
    grad = jax.grad(lambda x: losses.LOSSES[name](x, labels, VALID))(
        jnp.asarray(LOGITS[..., :channels])
    )
    assert bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).sum()) > 0
    assert not np.asarray(grad)[~VALID].any()  # invalid pixels get no gradient


def test_weighted_sum_and_deep_supervision_average():
    loss_fn = losses.make_loss(
        {"cross_entropy": 1.0, "dice": 0.5}, {"cross_entropy": {"label_smoothing": 0.1}}
    )
    total, parts = loss_fn(LOGITS, LABELS, VALID)
    ce = losses.cross_entropy(LOGITS, LABELS, VALID, label_smoothing=0.1)
    np.testing.assert_allclose(parts["cross_entropy"], ce, rtol=1e-6)
    np.testing.assert_allclose(total, ce + 0.5 * losses.dice(LOGITS, LABELS, VALID), rtol=1e-6)
    other = LOGITS[::-1].copy()
    heads_total, _ = loss_fn([LOGITS, other], LABELS, VALID)
    np.testing.assert_allclose(
        heads_total, (total + loss_fn(other, LABELS, VALID)[0]) / 2, rtol=1e-6
    )


def test_make_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown loss 'dicee'"):
        losses.make_loss({"dicee": 1.0})
    with pytest.raises(ValueError, match="select no loss"):
        losses.make_loss({"dice": 0.0})


# --- metrics ---


def test_confusion_matrix_by_hand_with_padding():
    labels = np.array([[0, 0, 1, 1, 2, 2]])
    preds = np.array([[0, 1, 1, 1, 0, 2]])
    valid = np.array([[True, True, True, False, True, True]])  # the 4th pixel is padding
    cm = np.asarray(metrics.confusion_matrix(preds, labels, valid, 3))
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    s = metrics.summarize(cm, ["a", "b", "c"])
    # IoU: a 1/(1+1+1), b 1/(1+1+0), c 1/(1+0+1)
    np.testing.assert_allclose([s["iou/a"], s["iou/b"], s["iou/c"]], [1 / 3, 1 / 2, 1 / 2])
    np.testing.assert_allclose(s["miou"], (1 / 3 + 1 / 2 + 1 / 2) / 3)
    np.testing.assert_allclose(s["dice/a"], 2 / (2 + 1 + 1))
    np.testing.assert_allclose(s["pixel_accuracy"], 3 / 5)
    np.testing.assert_allclose(s["precision"], np.mean([1 / 2, 1 / 2, 1]))
    np.testing.assert_allclose(s["recall"], np.mean([1 / 2, 1, 1 / 2]))


def test_perfect_and_all_wrong_predictions():
    valid = np.ones_like(LABELS, bool)
    perfect = metrics.summarize(np.asarray(metrics.confusion_matrix(LABELS, LABELS, valid, C)))
    assert perfect["miou"] == 1.0 and perfect["dice"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    wrong = metrics.summarize(
        np.asarray(metrics.confusion_matrix((LABELS + 1) % C, LABELS, valid, C))
    )
    assert wrong["miou"] == 0.0 and wrong["dice"] == 0.0 and wrong["pixel_accuracy"] == 0.0


def test_confusion_matrix_matches_numpy():
    preds = RNG.integers(0, C, LABELS.shape)
    expected = np.zeros((C, C), int)
    np.add.at(expected, (LABELS[VALID], preds[VALID]), 1)
    np.testing.assert_array_equal(metrics.confusion_matrix(preds, LABELS, VALID, C), expected)


def test_binary_model_is_scored_as_two_classes():
    logits = np.array([[[[2.0], [-1.0], [0.5]]]])
    labels = np.array([[[1, 0, 0]]])
    preds = metrics.predict(logits)
    np.testing.assert_array_equal(preds, [[[1, 0, 1]]])
    cm = np.asarray(metrics.confusion_matrix(preds, labels, np.ones_like(labels, bool), 1))
    np.testing.assert_array_equal(cm, [[1, 1], [0, 1]])


def test_deep_supervision_prediction_modes():
    a = np.zeros((1, 1, 2, 2), np.float32)
    a[0, 0, :, 0] = 3.0  # head 1 says class 0 strongly
    b = np.zeros((1, 1, 2, 2), np.float32)
    b[0, 0, :, 1] = 1.0  # head 2 says class 1 weakly
    np.testing.assert_array_equal(metrics.predict([a, b], "fast"), [[[1, 1]]])
    np.testing.assert_array_equal(metrics.predict([a, b], "fast", head=0), [[[0, 0]]])
    np.testing.assert_array_equal(metrics.predict([a, b], "accurate"), [[[0, 0]]])
    with pytest.raises(ValueError, match="mode='best'"):
        metrics.predict([a, b], "best")


def test_classes_that_occur_nowhere_are_left_out_of_the_mean():
    cm = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    s = metrics.summarize(cm)
    assert s["miou"] == 1.0 and np.isnan(s["iou/2"])


def test_per_image_metrics_by_hand():
    # Image 1: a perfect prediction. Image 2: one of its two class-1 pixels missed.
    # Image 3: batch padding (no valid pixel), left out.
    labels = np.array([[[0, 1, 1]], [[0, 1, 1]], [[0, 0, 0]]])
    preds = np.array([[[0, 1, 1]], [[0, 0, 1]], [[1, 1, 1]]])
    valid = np.array([[[True] * 3], [[True] * 3], [[False] * 3]])
    per_image = np.asarray(metrics.per_image_confusion(preds, labels, valid, 2))
    assert per_image.shape == (3, 2, 2)
    np.testing.assert_array_equal(
        per_image.sum(axis=0), metrics.confusion_matrix(preds, labels, valid, 2)
    )
    s = metrics.summarize_per_image(per_image, ["bg", "fg"])
    assert s["images"] == 2
    # Image 2: bg IoU 1/2, fg IoU 1/2; Dice 2/3 each.
    np.testing.assert_allclose(s["image_miou"], (1.0 + 0.5) / 2)
    np.testing.assert_allclose(s["image_dice"], (1.0 + 2 / 3) / 2)
    np.testing.assert_allclose(s["image_iou/fg"], (1.0 + 0.5) / 2)
    # Pooled over both images the numbers differ: fg IoU 3/4, bg IoU 2/3.
    pooled = metrics.summarize(per_image.sum(axis=0), ["bg", "fg"])
    np.testing.assert_allclose([pooled["iou/bg"], pooled["iou/fg"]], [2 / 3, 3 / 4])


def test_per_image_mean_skips_classes_absent_from_an_image():
    # Image 1 has only background, predicted right: its mIoU is 1 (fg occurs nowhere in it).
    # Image 2 has foreground that is entirely missed: bg IoU 1/2, fg IoU 0.
    per_image = np.array([[[4, 0], [0, 0]], [[1, 0], [1, 0]]])
    s = metrics.summarize_per_image(per_image, ["bg", "fg"])
    np.testing.assert_allclose(s["image_miou"], (1.0 + 0.25) / 2)
    np.testing.assert_allclose(s["image_iou/fg"], 0.0)  # the mean over the one image with fg
