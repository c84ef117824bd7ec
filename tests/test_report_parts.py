"""The report's parts: how a split was scored follows the records' data.eval_size; speed
figures over seeds skip the ones never measured."""

import math

import ml_collections

from segjax.experiments.report_parts import budget_fields, median_measured, scored_images


def _config(eval_size):
    config = ml_collections.ConfigDict(
        {"total_steps": 10, "batch_size": 2, "data": {"image_size": (96, 96)}}
    )
    if eval_size is not None:
        config.data.eval_size = eval_size
    return config


def _row(eval_size):
    return budget_fields({"train_seconds": 60.0, "eval_seconds": 6.0}, _config(eval_size))


def test_scored_images_says_full_size_only_when_no_member_resized_the_split():
    assert scored_images([_row(None), _row(())], "test") == "the full-size `test` images"
    assert scored_images([_row((96, 96))] * 2, "validation") == (
        "the `validation` images resized to 96x96"
    )
    assert scored_images([_row((96, 96)), _row(None)], "test") == (
        "the `test` images at full size, 96x96 (sizes DIFFER)"
    )


def test_records_written_before_eval_size_existed_read_as_full_size():
    assert scored_images([{"steps": 1}], "test") == "the full-size `test` images"


def test_median_measured_skips_unmeasured_seeds_and_is_nan_when_none_was():
    nan = float("nan")
    rows = [{"ms": 168.6}, {"ms": 114.3}, {"ms": nan}, {"ms": 112.4}]
    assert median_measured(rows, "ms") == 114.3  # one slow seed does not set the figure
    assert math.isnan(median_measured([{"ms": nan}], "ms"))
