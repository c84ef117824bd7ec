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
