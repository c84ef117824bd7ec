"""Looks at a config's data: split sizes, class frequencies, pipeline throughput, and a PNG grid of
augmented image/mask pairs (``WORKDIR/augmentations.png``), i.e. what the model is fed.

    python -m segjax.inspect_data --config configs/default.py --workdir runs/data
    python -m segjax.inspect_data --config configs/default.py:dsb2018 --workdir runs/dsb \
        --config.data.image_size=256,256
"""

import os
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags
from PIL import Image

from segjax import cli
from segjax.data import device_augment, load_dataset, train_iterator
from segjax.data.pipeline import make_preprocess
from segjax.validation import check_config
from segjax.visualize import colourise, denormalise


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "where to write augmentations.png")
    flags.DEFINE_integer("batches", 20, "batches to time for the throughput")
    flags.DEFINE_integer("max_examples", 500, "train examples to count class frequencies over")
    flags.DEFINE_integer("grid", 8, "augmented examples in the PNG grid")


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


def inspect(config, workdir: str, batches: int, max_examples: int, grid_size: int) -> None:
    config = check_config(config)
    dataset = load_dataset(config.data)
    print(
        f"dataset {dataset.name}: {dataset.num_classes} classes, ignore label "
        f"{dataset.ignore_label if dataset.ignore_label is not None else config.data.ignore_label}"
    )
    print("\nsplit        examples")
    for split, source in dataset.splits.items():
        print(f"{split:<12} {len(source):>8}")

    train = dataset.split("train")
    counts = class_frequencies(train, dataset.num_classes, max_examples)
    print(f"\nclass frequencies (pixels of {min(max_examples, len(train))} train examples)")
    for name, count in zip([*dataset.class_names, "(ignored)"], counts, strict=True):
        if name != "(ignored)" or count:
            print(f"  {name:<20} {count / counts.sum():7.2%}")

    batch_size = config.batch_size
    iterator = train_iterator(dataset, config.data, batch_size, config.seed, 0, 1)
    first = next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    iterator.close()
    where = ""
    if device_augment.is_raw(first):  # data.augment.on_device: the host drew and cut only
        preprocess = make_preprocess(dataset, config.data)
        first = jax.device_get(
            jax.jit(device_augment.augment_batch, static_argnums=1)(first, preprocess)
        )
        where = ", augmentation on the device: the host's part"
    size = "x".join(map(str, first["image"].shape[1:3]))
    print(
        f"\npipeline: {batches * batch_size / seconds:.1f} images/s at {size} "
        f"(batch {batch_size}, {config.data.num_threads} threads, data.num_workers="
        f"{config.data.num_workers}{where}, {batches} batches after the first)"
    )

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "augmentations.png")
    grid = augmentation_grid(first, grid_size, tuple(config.data.mean), tuple(config.data.std))
    Image.fromarray(grid).save(path)
    print(f"wrote {path} (top: augmented images; below: masks, grey = not counted)")


def main(argv) -> int:
    cli.positional(argv)
    cli.require("config", "workdir")
    args = flags.FLAGS
    inspect(args.config, args.workdir, args.batches, args.max_examples, args.grid)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
