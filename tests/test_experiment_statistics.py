"""The experiment report's statistics: per-image IoU from confusion matrices, the
pytorch-nested-unet batch IoU, paired tests over images, and the convergence criterion."""

import json

import numpy as np
import pytest

from segjax.experiments import curves, paired


def record(tp, fp, fn, tn=100):
    """A binary image's confusion matrix (rows true, columns predicted; class 1 = foreground)."""
    return {"confusion": [[tn, fp], [fn, tp]]}


def test_per_image_iou_and_the_batch_pooled_iou():
    records = [record(8, 1, 1), record(0, 0, 0), record(3, 3, 0)]
    iou = paired.per_image_iou(records, 1)
    np.testing.assert_allclose(iou[[0, 2]], [0.8, 0.5])
    assert np.isnan(iou[1])  # no foreground in truth or prediction
    # Batches of 2: (8+0)/(10+0) for the first two images, 3/6 for the last; weighted by size.
    smooth = 1e-5
    expected = (2 * (8 + smooth) / (10 + smooth) + (3 + smooth) / (6 + smooth)) / 3
    assert paired.batch_pooled_iou(records, 1, batch_size=2) == pytest.approx(expected)
    assert paired.batch_pooled_iou(records, 1, batch_size=16) == pytest.approx(11 / 16, 1e-5)


def test_paired_comparison_finds_a_real_shift_and_not_noise():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.6, 0.9, 100)
    shifted = paired.compare(b + 0.02 + rng.normal(0, 0.01, 100), b)
    assert shifted["significant"] and shifted["p_value"] < 1e-6
    assert shifted["low"] < 0.02 < shifted["high"] and shifted["images"] == 100
    symmetric = rng.normal(0, 0.05, 50)
    noise = paired.compare(b + np.concatenate([symmetric, -symmetric]), b)
    assert not noise["significant"] and noise["low"] < 0 < noise["high"]
    # The same inputs give the same interval (fixed bootstrap seed): reports rebuild exactly.
    assert json.dumps(paired.compare(b + 0.01, b)) == json.dumps(paired.compare(b + 0.01, b))
    assert paired.compare(b, b)["p_value"] == 1.0
    assert paired.sentence("a", "b", paired.compare(b + 1e-5, b)).startswith(
        "a and b score the same per image to 4 decimals (95% interval +0.0000 to +0.0000"
    )
    with_nan = paired.compare(np.append(b, np.nan), np.append(b + 0.1, 0.5))
    assert with_nan["images"] == 100 and "higher than" in paired.sentence("a", "b", with_nan)
    assert "disagrees" not in paired.sentence("a", "b", shifted)
    # Ten images far better, ninety a little worse: the mean and the signed ranks part.
    skewed = paired.compare(b + np.where(np.arange(100) < 10, 0.1, -0.003), b)
    assert skewed["difference"] > 0 > skewed["median"] and skewed["a_higher"] == 10
    assert (
        "which the mean disagrees with (its interval excludes 0; median difference -0.0030, "
        "a higher on 10 of 100 images)" in paired.sentence("a", "b", skewed)
    )
    # Noise with one outlier: mean and median of opposite signs, neither test significant.
    tied = np.concatenate([symmetric, -symmetric]) - 0.001
    tied[np.argmax(tied)] += 0.2
    tied = paired.compare(b + tied, b)
    assert tied["difference"] > 0 > tied["median"] and not tied["significant"]
    sentence = paired.sentence("a", "b", tied)
    assert "disagrees" not in sentence and sentence.endswith(
        "not significant at 0.05; the mean and the median differ in sign (median difference "
        "-0.0010, a higher on 50 of 100 images)."
    )
    with pytest.raises(ValueError, match="same images"):
        paired.compare(b, b[:50])
    np.testing.assert_allclose(paired.seed_average([b, b + 0.2]), b + 0.1)


def test_last_quarter_gain_decides_convergence():
    rising = [(100, 0.5), (200, 0.7), (300, 0.76), (400, 0.79)]
    figures = curves.last_quarter(rising, 400)
    assert figures["best_gain"] == pytest.approx(0.03) and not figures["converged"]
    flat = [(100, 0.5), (200, 0.7), (300, 0.80), (400, 0.803)]
    figures = curves.last_quarter(flat, 400)
    assert figures["converged"] and figures["final_gain"] == pytest.approx(0.003)
    noisy = [(100, 0.5), (200, 0.82), (300, 0.80), (400, 0.81)]  # the best came early
    assert curves.last_quarter(noisy, 400)["best_gain"] == 0.0
    assert curves.steps_to_fraction(rising) == 300  # the first value >= 0.95 * 0.79
    erratic = [(100, 0.76), (200, 0.82), (300, 0.70), (400, 0.75)]
    assert curves.steps_to_fraction(erratic) == 200  # 95% of the best (0.82), not of the last
    with pytest.raises(ValueError, match="at least 2 validation passes"):
        curves.last_quarter(rising[:1], 400)


def test_validation_curve_reads_the_eval_lines_of_metrics_jsonl(tmp_path):
    lines = [
        {"step": 1, "train/loss": 1.0},
        {"step": 50, "eval/iou/nucleus": 0.4, "eval/miou": 0.6},
        {"step": 100, "eval/iou/nucleus": 0.5},
        {"step": 50, "eval/iou/nucleus": 0.45},  # a resumed run repeats step 50
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert curves.validation_curve(str(tmp_path), "iou/nucleus") == [(50, 0.45), (100, 0.5)]
    assert curves.validation_curve(str(tmp_path), "miou") == [(50, 0.6)]


def test_the_curves_title_fits_a_figure_of_one_panel():
    """A sweep of one model (the U-Net's seeds alone) makes a figure one panel wide; its title
    once ran off both edges."""
    seeds = {f"unet_resnet18_seed{i}": [(900, 0.7 + i / 100), (1800, 0.8)] for i in range(3)}
    title = "nested_pyramid_grid: validation iou/nucleus"
    figure = curves.curves_figure(seeds, title, "validation iou/nucleus")
    figure.canvas.draw()
    box, page = figure._suptitle.get_window_extent(), figure.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1, (box, page)
    assert "the last quarter" in figure._suptitle.get_text()


def test_curves_of_different_metrics_get_their_own_range_and_label():
    """A Mask R-CNN's validation DSB score (about 0.45) beside a U-Net's IoU (about 0.85): on one
    shared axis the DSB curve was squeezed into the bottom of its panel, labelled with both."""
    runs = {
        "maskrcnn_fpn_seed0": [(100, 0.40), (200, 0.46)],
        "maskrcnn_unetpp_seed0": [(100, 0.42), (200, 0.47)],
        "unet_seed0": [(100, 0.80), (200, 0.86)],
    }
    metrics = {"maskrcnn_fpn_seed0": "dsb_score", "maskrcnn_unetpp_seed0": "dsb_score"}
    metrics["unet_seed0"] = "iou/nucleus"
    figure = curves.curves_figure(runs, "grid", "validation dsb_score / iou/nucleus", metrics)
    fpn, unetpp, unet = figure.axes[:3]
    assert fpn.get_ylim() == unetpp.get_ylim()
    assert fpn.get_ylim()[1] < 0.5 and unet.get_ylim()[0] > 0.7
    assert fpn.get_ylabel() == "validation dsb_score"
    assert unet.get_ylabel() == "validation iou/nucleus"


def test_every_column_of_curves_names_its_step_axis():
    """Five panels in four columns: the columns whose lowest panel is in the first row once had
    no x label (only the bottom row was labelled)."""
    runs = {f"model{i}": [(100, 0.5), (200, 0.6)] for i in range(5)}
    figure = curves.curves_figure(runs, "tuning", "validation miou")
    visible = [axis for axis in figure.axes if axis.get_visible()]
    # model0 above model4 in the first column; model1-3 alone in theirs
    assert [axis.get_xlabel() for axis in visible] == ["", "step", "step", "step", "step"]
