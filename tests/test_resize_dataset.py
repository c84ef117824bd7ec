"""experiments/founding/resize_dataset.py: a folder resized ahead gives the pipeline the same
arrays as the full-size folder under whole-image resizing, for training and evaluation."""

import pathlib

import numpy as np

from segjax.data import eval_dataset, load_dataset, train_iterator
from segjax.experiments.spec import load_module
from tests.conftest import varied_items, write_folder
from tests.test_data_builders import data_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _resize_folder():
    return load_module(str(ROOT / "experiments" / "founding" / "resize_dataset.py")).resize_folder


def test_the_resized_copy_gives_the_same_train_and_eval_arrays(tmp_path, tfds_dir):
    items = varied_items(6)  # 20x24 .. 35x49, PNG, JPEG, TIFF, BMP, RGBA; 0/255 masks
    splits = {"train": list(items)[:4], "validation": list(items)[4:], "test": list(items)[4:]}
    full = write_folder(tmp_path / "full", items, splits=splits)
    assert _resize_folder()(full, str(tmp_path / "small"), 16) == 6

    def data(path):
        return data_config(
            name="folder",
            path=path,
            data_dir=tfds_dir,
            num_classes=2,
            image_size=(16, 16),
            eval_size=(16, 16),
            augment={**data_config().augment.to_dict(), "whole_image": True},
        )

    configs = data(full), data(str(tmp_path / "small"))
    pairs = [(load_dataset(c), c) for c in configs]
    for split in ("validation", "test"):
        a, b = (list(eval_dataset(d, split, c, 2, 0, 1)) for d, c in pairs)
        assert len(a) == len(b) == 1
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=f"{split} {key}")
    a, b = (train_iterator(d, c, 4, 0, 0, 1) for d, c in pairs)
    for _ in range(3):  # three epochs of flips, turns and colour jitter
        x, y = next(a), next(b)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"train {key}")
