"""Looks at a config's data: split sizes, class frequencies, pipeline throughput, and a PNG grid of
augmented image/mask pairs (``WORKDIR/augmentations.png``), i.e. what the model is fed.

    python -m segjax.data.inspect --config configs/default.py --workdir runs/data
    python -m segjax.data.inspect --config configs/default.py:dsb2018 --workdir runs/dsb \
        --config.data.image_size=256,256
"""

import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image

from segjax.data import DataError, load_dataset, train_iterator
from segjax.data.augment import IMAGENET_MEAN, IMAGENET_STD

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file")
_WORKDIR = flags.DEFINE_string("workdir", None, "where to write augmentations.png")
_BATCHES = flags.DEFINE_integer("batches", 20, "batches to time for the throughput")
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", 500, "train examples to count class frequencies over"
)
_GRID = flags.DEFINE_integer("grid", 8, "augmented examples in the PNG grid")

PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    np.uint8,
)


def colourise(label: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Class ids as colours (a fixed palette, then hashed colours); invalid pixels grey."""
    extra = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    palette = np.concatenate([PALETTE, extra[len(PALETTE) :]])
    out = palette[label % 256]
    out[~valid] = 128
    return out


def denormalise(image: np.ndarray, mean, std) -> np.ndarray:
    channels = image.shape[-1]
    mean = np.asarray(mean or (IMAGENET_MEAN if channels == 3 else [np.mean(IMAGENET_MEAN)]))
    std = np.asarray(std or (IMAGENET_STD if channels == 3 else [np.mean(IMAGENET_STD)]))
    out = np.clip((image * std + mean) * 255, 0, 255).astype(np.uint8)
    return np.repeat(out, 3, axis=-1) if channels == 1 else out[..., :3]


def augmentation_grid(batch: dict, count: int, mean, std) -> np.ndarray:
    """Images on top, their masks below, one column per example; small crops enlarged."""
    columns = []
    for i in range(min(count, len(batch["index"]))):
        image = denormalise(batch["image"][i], mean, std)
        mask = colourise(batch["label"][i], batch["valid"][i])
        columns.append(
            np.concatenate([image, np.full((2, *image.shape[1:]), 255, np.uint8), mask], axis=0)
        )
        columns.append(np.full((columns[-1].shape[0], 2, 3), 255, np.uint8))
    grid = np.concatenate(columns[:-1], axis=1)
    zoom = max(1, 160 // batch["image"].shape[1])
    return grid.repeat(zoom, axis=0).repeat(zoom, axis=1)


def class_frequencies(source, num_classes: int, limit: int) -> np.ndarray:
    counts = np.zeros(num_classes + 1, np.int64)  # last: anything else (ignore label)
    for i in range(min(limit, len(source))):
        mask = source[i]["mask"].ravel()
        counts += np.bincount(np.minimum(mask, num_classes), minlength=num_classes + 1)
    return counts


def inspect(config, workdir: str) -> None:
    dataset = load_dataset(config.data)
    print(
        f"dataset {dataset.name}: {dataset.num_classes} classes, ignore label "
        f"{dataset.ignore_label if dataset.ignore_label is not None else config.data.ignore_label}"
    )
    print("\nsplit        examples")
    for split, source in dataset.splits.items():
        print(f"{split:<12} {len(source):>8}")

    train = dataset.split("train")
    counts = class_frequencies(train, dataset.num_classes, _MAX_EXAMPLES.value)
    print(f"\nclass frequencies (pixels of {min(_MAX_EXAMPLES.value, len(train))} train examples)")
    for name, count in zip([*dataset.class_names, "(ignored)"], counts, strict=True):
        if name != "(ignored)" or count:
            print(f"  {name:<20} {count / counts.sum():7.2%}")

    batch_size = config.batch_size
    iterator = train_iterator(dataset, config.data, batch_size, config.seed, 0, 1)
    first = next(iterator)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
        next(iterator)
    seconds = time.perf_counter() - start
    size = "x".join(map(str, first["image"].shape[1:3]))
    print(
        f"\npipeline: {_BATCHES.value * batch_size / seconds:.1f} images/s at {size} "
        f"(batch {batch_size}, {config.data.num_threads} threads, {_BATCHES.value} batches "
        f"after the first)"
    )

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "augmentations.png")
    grid = augmentation_grid(first, _GRID.value, tuple(config.data.mean), tuple(config.data.std))
    Image.fromarray(grid).save(path)
    print(f"wrote {path} (top: augmented images; below: masks, grey = not counted)")


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    try:
        inspect(_CONFIG.value, _WORKDIR.value)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
