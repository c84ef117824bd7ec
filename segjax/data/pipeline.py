"""Deterministic, resumable, multi-process input pipelines on grain.

Training reads an endless stream: the split is shuffled with the seed (a new permutation each
epoch), every example is augmented with a random generator derived from (seed, its position in the
stream), and the stream is cut into global batches. Process p of P takes rows
``[p * b, (p + 1) * b)`` of each global batch (b = global batch / P) and reads only those, so the
global batches are the same whatever the number of processes, and the processes read disjoint
examples. Because grain's MapDataset is random access, the iterator state is a position:
``iterator.get_state()`` is a small dict, and ``set_state`` on a freshly built pipeline continues
with exactly the batches an uninterrupted run would have seen.

Evaluation counts every example exactly once. Images keep their full resolution unless
``data.eval_size`` resizes them: ``eval_plan`` groups them by size into global batches (each on
the canvas of its largest image, so a split of varied sizes compiles a few shapes and pads
little), the same plan on every process; process p takes its rows of each, and padding rows are
empty examples. ``valid`` marks the pixels that count (not padding, not the ignore label).

Each batch: ``image`` float32 (b, H, W, C) normalised, ``label`` int32 (b, H, W) (0 where not
valid), ``valid`` bool (b, H, W), ``index`` int32 (b,) position in the split (-1 for padding).
Training batches of instance models (``data.max_instances`` > 0) also hold the detection targets
of ``segjax.data.instances``: ``instances`` int32 (b, H, W), ``boxes`` float32 (b, M, 4) and
``classes`` int32 (b, M).
"""

import dataclasses
import functools
import math
import os
from typing import Any

import grain
import numpy as np

from segjax.data import augment
from segjax.data.errors import DataError
from segjax.data.images import check_mask_values
from segjax.data.instances import instance_targets
from segjax.data.sources import CachedSource, Dataset, SplitSource
from segjax.errors import check_batch_size


def process_layout(
    global_batch_size: int, process_index: int | None, process_count: int | None
) -> tuple[int, int, int]:
    """(per-process batch size, process index, process count), JAX's by default."""
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    check_batch_size(global_batch_size, process_count, "the process count", DataError)
    return global_batch_size // process_count, process_index, process_count


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Turns a source example into a model example; checks mask values on the way."""

    dataset: str
    num_classes: int
    ignore_label: int | None
    image_size: tuple[int, int]
    scale_range: tuple[float, float]
    whole_image: bool  # resize the whole image to image_size instead of a random crop
    hflip: bool
    vflip: bool
    rot90: bool
    color_jitter: float
    mean: tuple[float, ...] | None  # None: ImageNet statistics
    std: tuple[float, ...] | None
    max_instances: int = 0  # > 0: detection targets with this many slots
    min_instance_area: int = 1
    # True: ``train`` draws the augmentation and cuts out the source window only, and the
    # train step does the per-pixel work (``segjax.data.device_augment``).
    on_device: bool = False

    def _labels(self, example: dict, mask: np.ndarray, valid: np.ndarray):
        where = f"dataset {self.dataset!r}, example {example['name']!r}"
        check_mask_values(where, mask, self.num_classes, self.ignore_label)
        ignore = mask == self.ignore_label if self.ignore_label is not None else False
        valid = valid & ~ignore
        return np.where(valid, mask, 0).astype(np.int32), valid

    def train(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if self.on_device:
            return self.train_raw(example, rng)
        with_instances = self.max_instances > 0
        if with_instances and "instances" not in example:
            raise DataError(
                f"dataset {self.dataset!r}, example {example['name']!r}: data.max_instances="
                f"{self.max_instances} needs instance maps, and this dataset has none"
            )
        extra = [example["instances"]] if with_instances else []
        if self.whole_image:
            image, mask, valid, *extra = augment.resize_whole(
                example["image"], example["mask"], self.image_size, extra
            )
        else:
            image, mask, valid, *extra = augment.random_scale_crop(
                example["image"], example["mask"], self.image_size, self.scale_range, rng, extra
            )
        image, mask, valid, *extra = augment.flip_and_rotate(
            [image, mask, valid, *extra], rng, self.hflip, self.vflip, self.rot90
        )
        image = augment.color_jitter(image, self.color_jitter, rng)
        label, valid = self._labels(example, mask, valid)
        out = {
            "image": augment.normalize(image, self.mean, self.std),
            "label": label,
            "valid": valid,
            "index": np.int32(example["index"]),
        }
        if with_instances:
            out.update(
                instance_targets(
                    extra[0],
                    label,
                    valid,
                    self.num_classes,
                    self.max_instances,
                    self.min_instance_area,
                )
            )
        return out

    def train_raw(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``train``'s draws, the same numbers in the same order, and the source window they
        read: what ``device_augment.augment_batch`` turns into ``train``'s output."""
        out = augment.cut_window(
            example["image"], example["mask"], self.image_size, self.scale_range, rng
        )
        where = f"dataset {self.dataset!r}, example {example['name']!r}"
        check_mask_values(where, out["window_mask"], self.num_classes, self.ignore_label)
        square = self.image_size[0] == self.image_size[1]
        flips = augment.draw_flips(rng, self.hflip, self.vflip, self.rot90, square)
        jitter = augment.draw_jitter(self.color_jitter, rng)
        out["flips"] = np.asarray(flips, np.int32)
        out["jitter"] = np.asarray(jitter, np.float32)
        out["index"] = np.int32(example["index"])
        return out

    def evaluate(
        self,
        example: dict | None,
        canvas: tuple[int, int],
        channels: int,
        eval_size: tuple[int, int] | None,
    ) -> dict[str, np.ndarray]:
        out = {
            "image": np.zeros((*canvas, channels), np.float32),
            "label": np.zeros(canvas, np.int32),
            "valid": np.zeros(canvas, bool),
            "index": np.int32(-1),
        }
        if example is None:  # padding of the last batches
            return out
        image, mask = example["image"], example["mask"]
        if eval_size is not None:
            image, mask = augment.resize(image, mask, eval_size)
        label, valid = self._labels(example, mask, np.ones(mask.shape, bool))
        height, width = mask.shape
        out["image"][:height, :width] = augment.normalize(image, self.mean, self.std)
        out["label"][:height, :width], out["valid"][:height, :width] = label, valid
        out["index"] = np.int32(example["index"])
        return out


def make_preprocess(dataset: Dataset, data: Any) -> Preprocess:
    """The preprocessing ``config.data`` describes (its keys checked by segjax.validation)."""
    aug = data.augment
    ignore = dataset.ignore_label if dataset.ignore_label is not None else data.ignore_label
    scale_range = tuple(float(s) for s in aug.scale_range)
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise DataError(f"data.augment.scale_range={scale_range!r}: need 0 < low <= high")
    return Preprocess(
        dataset=dataset.name,
        num_classes=dataset.num_classes,
        ignore_label=ignore,
        image_size=_pair("data.image_size", data.image_size),
        scale_range=scale_range,
        whole_image=bool(aug.get("whole_image", False)),
        hflip=bool(aug.hflip),
        vflip=bool(aug.vflip),
        rot90=bool(aug.rot90),
        color_jitter=float(aug.color_jitter),
        mean=tuple(data.mean) if data.mean else None,
        std=tuple(data.std) if data.std else None,
        max_instances=int(data.get("max_instances", 0)),
        min_instance_area=int(data.get("min_instance_area", 1)),
        on_device=bool(aug.get("on_device", False)),
    )


def _pair(key: str, value: Any) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    pair = pair * 2 if len(pair) == 1 else pair
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise DataError(f"{key}={value!r}: need a positive size or (height, width)")
    return pair


def _read_options(data: Any) -> grain.ReadOptions:
    return grain.ReadOptions(
        num_threads=int(data.num_threads),
        prefetch_buffer_size=int(data.prefetch),
    )


def train_dataset(
    dataset: Dataset,
    data: Any,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """The endless, shuffled, augmented training batches of this process."""
    batch, index, count = process_layout(global_batch_size, process_index, process_count)
    source = dataset.split("train")
    if data.get("cache", False):
        source = CachedSource(source)
    preprocess = make_preprocess(dataset, data)
    stream = (
        grain.MapDataset.source(source)
        .shuffle(seed=seed)
        .repeat(None)
        .random_map(preprocess.train, seed=seed + 1)
    )
    batches = stream.batch(batch, drop_remainder=True)[index::count]
    return _prefetched(batches.to_iter_dataset(_read_options(data)), data)


# Hosts with at most this many cores read in threads only: worker processes cost more than they
# bring there (benchmarks/README.md, "The input pipeline").
SMALL_HOST_CORES = 4


def auto_workers(cores: int | None = None) -> int:
    """``data.num_workers=-1``: none on a small host, else half its cores (the rest for the
    training process, its threads and the device runtime), at most 16."""
    cores = cores or os.cpu_count() or 1
    return 0 if cores <= SMALL_HOST_CORES else min(cores // 2, 16)


def _prefetched(stream: grain.IterDataset, data: Any) -> grain.IterDataset:
    """``stream`` computed by ``data.num_workers`` worker processes (0: in this process's
    threads only; -1: ``auto_workers``). grain gives worker w the batches w, w + n, ... and takes
    them back in turn, so the batches and their order are the same for any number of workers."""
    workers = int(data.get("num_workers", 0))
    workers = auto_workers() if workers < 0 else workers
    if workers == 0:
        return stream
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library user has none
        flags.FLAGS.mark_as_parsed()
    return stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


def train_iterator(*args, **kwargs) -> grain.DatasetIterator:
    """``iter(train_dataset(...))``: has ``get_state()`` and ``set_state(state)``."""
    return iter(train_dataset(*args, **kwargs))


# Full-resolution images are grouped by their size rounded up to this (a multiple of every
# model's deepest stride), so a split of many sizes compiles the eval step a few times, not once per
# size, and no image is padded far beyond its own size.
SIZE_BUCKET = 32


@functools.lru_cache(maxsize=16)
def _example_sizes(source: SplitSource) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(n) for n in source[i]["mask"].shape) for i in range(len(source)))


@dataclasses.dataclass(frozen=True)
class EvalBatch:
    """One global eval batch: the examples (positions in the split), and its rows and canvas."""

    examples: tuple[int, ...]
    rows: int  # >= len(examples); the rest are padding rows
    canvas: tuple[int, int]


def eval_plan(
    dataset: Dataset,
    split: str,
    data: Any,
    global_batch_size: int,
    process_count: int = 1,
    row_multiple: int = 1,
) -> list[EvalBatch]:
    """The global eval batches of ``split``, the same on every process.

    Examples are grouped by size bucket (``SIZE_BUCKET``), smallest first; a batch holds one
    bucket's examples on a canvas of their largest height and width. A bucket's last batch is
    shrunk to the fewest rows that still divide among ``lcm(process_count, row_multiple)`` (pass
    the device count), so a few large images do not drag a full batch of padding along.
    """
    eval_size = data.eval_size
    source = dataset.split(split)
    if eval_size:
        sizes = (_pair("data.eval_size", eval_size),) * len(source)
    else:
        sizes = _example_sizes(source)
    unit = math.lcm(process_count, row_multiple)
    check_batch_size(
        global_batch_size, unit, "the processes and devices a batch is split over", DataError
    )
    buckets: dict[tuple[int, int], list[int]] = {}
    for position, (height, width) in enumerate(sizes):
        key = (-(-height // SIZE_BUCKET), -(-width // SIZE_BUCKET))
        buckets.setdefault(key, []).append(position)
    plan = []
    for key in sorted(buckets, key=lambda k: (k[0] * k[1], k)):
        members = buckets[key]
        for start in range(0, len(members), global_batch_size):
            chunk = tuple(members[start : start + global_batch_size])
            canvas = tuple(max(sizes[i][axis] for i in chunk) for axis in (0, 1))
            rows = min(global_batch_size, -(-len(chunk) // unit) * unit)
            plan.append(EvalBatch(chunk, rows, canvas))
    return plan


def eval_dataset(
    dataset: Dataset,
    split: str,
    data: Any,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    row_multiple: int = 1,
) -> grain.IterDataset:
    """This process's rows of every global batch of ``eval_plan``: over all processes, every
    example of ``split`` once."""
    _, index, count = process_layout(global_batch_size, process_index, process_count)
    plan = eval_plan(dataset, split, data, global_batch_size, count, row_multiple)
    source = dataset.split(split)
    preprocess = make_preprocess(dataset, data)
    eval_size = data.eval_size
    eval_size = _pair("data.eval_size", eval_size) if eval_size else None
    channels = source[0]["image"].shape[-1]

    def load(batch_index: int) -> dict[str, np.ndarray]:
        batch = plan[batch_index]
        rows = batch.rows // count
        examples = batch.examples[index * rows : (index + 1) * rows]
        padded = [source[i] for i in examples] + [None] * (rows - len(examples))
        loaded = [preprocess.evaluate(e, batch.canvas, channels, eval_size) for e in padded]
        return {key: np.stack([e[key] for e in loaded]) for key in loaded[0]}

    return grain.MapDataset.range(len(plan)).map(load).to_iter_dataset(_read_options(data))
