"""Shared fixtures: a TFDS data dir per test session and the small synthetic dataset in it."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.cli_utils import FAST_COMPILE

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Before any test initialises JAX's backend; the commands the tests start inherit it.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


# The longest tests (seconds each in .ci/run's second run on this 2-core machine, 2026-12-02),
# started first: pytest-xdist hands out tests in collection order as workers free up, so with
# the longest first none of them is left to finish alone at the end of a run. (None of them
# shares a module-scoped fixture, which moving it away from its module would set up twice.)
LONGEST = {
    "test_train_compiles_once_and_eight_devices_match_one": 475,  # test_maskrcnn.py
    "test_instance_experiment_report": 348,  # test_maskrcnn.py
    "test_eight_devices_and_two_processes_match_one_device": 204,  # test_train.py
    "test_every_model_is_the_same_on_both_paths": 157,  # test_conv_ops.py, each case
    "test_killed_sweep_reruns_only_the_missing_members": 153,  # test_experiments.py
    "test_deploy_benchmark_times_every_exported_runtime": 149,  # test_benchmark.py
    "test_deep_supervision_and_paper_unet_export_like_jax": 145,  # test_export_matrix.py
    "test_a_checkpoint_from_before_conv_impl_evaluates_the_same": 142,  # test_conv_ops.py
    "test_lightweight_encoders_export_like_jax": 112,  # test_export_matrix.py
    "test_a_full_disk_is_one_error_and_the_run_resumes_exactly_elsewhere": 99,  # test_full_disk
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -LONGEST.get(item.originalname, 0))  # a stable sort


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA compilation cache for the session, shared with every command the tests
    start (through the environment): the many runs of the same tiny configs compile each program
    once. A cache hit runs the very executable a compile would have produced, so no result
    changes; only the session's time does (a tiny train command: 55 s cold, 16 s warm)."""
    import jax

    path = str(tmp_path_factory.mktemp("xla_cache"))
    settings = {
        "JAX_COMPILATION_CACHE_DIR": path,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.1",
    }
    os.environ.update(settings)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    yield path
    for key in settings:
        os.environ.pop(key, None)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.fixture(scope="session")
def small_config(tfds_dir):
    from configs.default import get_config

    config = get_config("small")
    config.data.data_dir = tfds_dir
    return config


@pytest.fixture(scope="session")
def shapes_small(small_config):
    from segjax.data import load_dataset

    return load_dataset(small_config.data)


def write_folder(root, items, splits=None, classes=None):
    """A folder dataset: ``items`` maps stem -> (image array, image suffix, mask array or None)."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    for stem, (image, suffix, mask) in items.items():
        Image.fromarray(image).save(os.path.join(root, "images", stem + suffix))
        if mask is not None:
            Image.fromarray(mask).save(os.path.join(root, "masks", stem + ".png"))
    if splits is not None:
        with open(os.path.join(root, "splits.json"), "w") as f:
            json.dump(splits, f)
    if classes is not None:
        with open(os.path.join(root, "classes.json"), "w") as f:
            json.dump(classes, f)
    return str(root)


def varied_items(count=6, seed=0):
    """Images of different sizes and formats: RGB PNG, JPEG, greyscale TIFF, BMP, RGBA PNG;
    binary 0/255 masks."""
    rng = np.random.default_rng(seed)
    kinds = [(".png", 3), (".jpg", 3), (".tif", 1), (".bmp", 3), (".png", 4), (".jpeg", 3)]
    items = {}
    for i in range(count):
        suffix, channels = kinds[i % len(kinds)]
        height, width = 20 + 3 * i, 24 + 5 * i
        shape = (height, width) if channels == 1 else (height, width, channels)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        mask = np.where(rng.random((height, width)) < 0.3, 255, 0).astype(np.uint8)
        items[f"img{i:02d}"] = (image, suffix, mask)
    return items
