"""The data inspection command: what a person sees before training."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).parents[1]


def run_inspect(*args):
    return subprocess.run(
        [sys.executable, "-m", "segjax.inspect_data", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("on_device", [False, True])
def test_inspect_prints_sizes_frequencies_throughput_and_writes_a_grid(
    tfds_dir, tmp_path, shapes_small, on_device
):
    result = run_inspect(
        "--config",
        "configs/default.py:small",
        f"--config.data.data_dir={tfds_dir}",
        f"--config.data.augment.on_device={on_device}",
        "--workdir",
        str(tmp_path),
        "--batches",
        "3",
        "--grid",
        "4",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ("augmentation on the device" in out) == on_device
    assert "dataset segjax_shapes/small: 4 classes" in out
    assert "train              96" in out and "test               23" in out
    assert "background" in out and "triangle" in out
    assert "images/s at 64x64" in out
    grid = np.asarray(Image.open(tmp_path / "augmentations.png"))
    assert grid.shape[0] > 2 * 64 and grid.shape[1] > 4 * 64  # 4 columns, image over mask
    assert grid.std() > 10  # a picture, not a blank


def test_inspect_bad_config_is_a_one_line_error(tmp_path):
    result = run_inspect(
        "--config",
        "configs/default.py",
        "--config.data.name=no_such_set",
        "--workdir",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: data.name='no_such_set' is not a known dataset")
    )
    assert "Traceback" not in result.stderr
