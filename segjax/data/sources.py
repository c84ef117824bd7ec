"""From ``config.data`` to random-access split sources with one example format.

Every source yields ``{"image": uint8 (H, W, C), "mask": uint8 (H, W) class ids, "name": str,
"index": int}``, and ``"instances"``: int32 (H, W) object ids (0 = background) where the dataset
has instance maps. Datasets are read as TFDS ``array_record`` data sources (random access, no
TensorFlow): that is what makes the input order a pure function of the seed and a resumed run's
position exact.

``config.data.name`` is one of:
- ``segjax_shapes`` or ``segjax_shapes/<config>``: the embedded synthetic dataset, generated offline
  into the TFDS data dir on first use;
- ``folder``: the user's images/masks under ``config.data.path`` (``segjax_folder`` builder);
- a standard TFDS dataset in ``STANDARD``, read from the TFDS data dir, where the user has prepared
  it in array_record format (nothing is downloaded).
"""

import dataclasses
import logging
import os
import shutil
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from segjax.data import folder as _folder  # noqa: F401  (registers segjax_folder)
from segjax.data import shapes as _shapes  # noqa: F401  (registers segjax_shapes)
from segjax.data.errors import DataError
from segjax.data.folder import SPLITS
from segjax.data.png import decode_label_map


@dataclasses.dataclass(frozen=True)
class StandardDataset:
    """How to read a standard TFDS segmentation dataset."""

    image_key: str
    mask_key: str
    class_names: tuple[str, ...]
    splits: dict[str, str]  # our split -> TFDS split string
    mask_offset: int = 0  # added to the stored mask values
    name_key: str | None = None


STANDARD = {
    # Trimap: 1 pet, 2 background, 3 border -> 0, 1, 2.
    "oxford_iiit_pet": StandardDataset(
        image_key="image",
        mask_key="segmentation_mask",
        class_names=("pet", "background", "border"),
        splits={"train": "train[:90%]", "validation": "train[90%:]", "test": "test"},
        mask_offset=-1,
        name_key="file_name",
    ),
}


class SplitSource:
    """A TFDS data source seen through the common example format (picklable for grain)."""

    def __init__(
        self,
        source,
        dataset: str,
        split: str,
        image_key="image",
        mask_key="mask",
        name_key: str | None = "name",
        mask_offset: int = 0,
    ):
        self.source, self.dataset, self.split = source, dataset, split
        self.image_key, self.mask_key, self.name_key = image_key, mask_key, name_key
        self.mask_offset = mask_offset

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.source[int(index)]
        mask = np.asarray(record[self.mask_key])
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if self.mask_offset:
            mask = (mask.astype(np.int32) + self.mask_offset).astype(np.uint8)
        name = record[self.name_key] if self.name_key else str(index)
        image = np.asarray(record[self.image_key])
        example = {
            "image": image if image.ndim == 3 else image[..., None],
            "mask": mask,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "index": int(index),
        }
        if "instances" in record:
            example["instances"] = decode_label_map(record["instances"])
        return example


class CachedSource:
    """A split source that keeps each example once read (decoded) in memory: every later epoch
    skips the image decoding, which is most of the host's work once the augmentation runs on the
    device. Each process holds its own cache (grain's worker processes: one each), so the split
    must fit in memory that many times. Pickled (for worker processes) without its cache."""

    def __init__(self, source: SplitSource):
        self.source, self._cache = source, {}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self._cache.get(index)
        if example is None:
            example = self._cache[index] = self.source[index]
        return example

    def __getstate__(self):
        return {"source": self.source}

    def __setstate__(self, state):
        self.source, self._cache = state["source"], {}


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    splits: dict[str, SplitSource]
    class_names: tuple[str, ...]
    ignore_label: int | None
    has_instances: bool = False  # every example has an ``instances`` map

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, split: str) -> SplitSource:
        if split not in SPLITS:
            raise DataError(f"split={split!r} is not valid; choose one of {list(SPLITS)}")
        source = self.splits.get(split)
        if source is None or len(source) == 0:
            raise DataError(f"dataset {self.name!r} has an empty {split!r} split")
        return source


def _prepared_builder(builder) -> Any:
    """The builder, prepared once. A preparation that fails (a bad file in a folder dataset)
    leaves nothing in the TFDS data dir: the folders it created, then empty or incomplete, go."""
    if builder.is_prepared():
        return builder
    logging.info("preparing %s in %s (once)", builder.name, builder.data_dir)
    version_dir = os.path.abspath(builder.data_dir)
    dataset_dir = os.path.dirname(os.path.dirname(version_dir))  # <name>/<config>/<version>
    existed = {d for d in (version_dir, dataset_dir) if os.path.exists(d)}
    try:
        builder.download_and_prepare(file_format="array_record")
    except BaseException:
        parent = os.path.dirname(version_dir)
        for entry in os.listdir(parent) if os.path.isdir(parent) else []:
            if entry.startswith("incomplete.") or entry == os.path.basename(version_dir):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        for folder in (parent, dataset_dir):  # the name and config folders, if left empty
            if folder not in existed and os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        raise
    return builder


def _class_names(data: Any, stored: list[str] | None) -> tuple[str, ...]:
    """Names from the dataset, checked against ``data.num_classes`` (0: take the dataset's)."""
    num_classes = int(data.get("num_classes", 0) or 0)
    if stored:
        if num_classes and num_classes != len(stored):
            raise DataError(
                f"data.num_classes={num_classes} but dataset {data.name!r} has "
                f"{len(stored)} classes {list(stored)}"
            )
        return tuple(stored)
    if num_classes < 2:
        raise DataError(
            f"data.num_classes={num_classes}: dataset {data.name!r} has no class "
            "list (classes.json), so set data.num_classes to at least 2"
        )
    names = tuple(data.get("class_names") or ())
    if names and len(names) != num_classes:
        raise DataError(
            f"data.class_names has {len(names)} names but data.num_classes={num_classes}"
        )
    return names or tuple(f"class_{i}" for i in range(num_classes))


def check_class_count(data: Any, mask_values: dict[str, str], ignore_label: int | None) -> None:
    """``data.num_classes`` of a folder without classes.json against the mask values seen when
    it was prepared (value -> the first mask file holding it): a value beyond the classes, or a
    class that no mask holds (a phantom class, averaged into mIoU as 0), is an error."""
    values = sorted(int(v) for v in mask_values if int(v) != ignore_label)
    num_classes = int(data.num_classes)
    where = os.path.join(data.path, "masks")
    beyond = [v for v in values if v >= num_classes]
    if beyond:
        raise DataError(
            f"data.num_classes={num_classes} but {mask_values[str(beyond[0])]} holds mask value "
            f"{beyond[0]} (values in {where}: {values}; ignore label {ignore_label}); set "
            f"data.num_classes to {max(values) + 1} or list the classes in "
            f"{os.path.join(data.path, 'classes.json')}"
        )
    absent = [c for c in range(num_classes) if c not in values]
    if values and absent:
        fewer = max(values) + 1
        hint = f"set data.num_classes={fewer}, or " if fewer < num_classes else ""
        raise DataError(
            f"data.num_classes={num_classes} but no mask in {where} holds class {absent[0]} "
            f"(values seen: {values}); {hint}list the classes in "
            f"{os.path.join(data.path, 'classes.json')} if some are absent on purpose"
        )


def load_dataset(data: Any) -> Dataset:
    """The splits of the dataset ``data`` (a ``config.data`` ConfigDict) names, built if needed."""
    name = data.name
    data_dir = os.path.expanduser(data.get("data_dir") or "") or None
    family = name.split("/")[0]
    if family == "segjax_shapes" or name == "folder":
        if name == "folder":
            path = data.get("path") or ""
            if not path or not os.path.isdir(path):
                raise DataError(
                    f"data.path={path!r}: no such directory (the folder dataset "
                    "needs images/ and masks/ under it)"
                )
            builder = tfds.builder(
                "segjax_folder",
                root=path,
                data_dir=data_dir,
                channels=int(data.channels),
                fractions=tuple(data.split_fractions),
                split_seed=int(data.split_seed),
                file_format="array_record",
            )
        else:
            try:
                builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
            except (ValueError, tfds.core.registered.DatasetNotFoundError) as error:
                raise DataError(f"data.name={name!r}: {error}") from None
        meta = builder.info.metadata or {}
        class_names = _class_names(data, meta.get("class_names"))  # checked before building
        _prepared_builder(builder)
        sources = builder.as_data_source()
        label = data.path if name == "folder" else name  # what messages call the dataset
        splits = {s: SplitSource(sources[s], label, s) for s in SPLITS if s in sources}
        dataset = Dataset(
            label,
            splits,
            class_names,
            meta.get("ignore_label"),
            bool(meta.get("has_instances", False)),
        )
        if name == "folder" and not meta.get("class_names"):
            ignore = data.ignore_label if dataset.ignore_label is None else dataset.ignore_label
            check_class_count(data, builder.info.metadata.get("mask_values") or {}, ignore)
        return dataset
    if name in STANDARD:
        spec = STANDARD[name]
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            raise DataError(
                f"data.name={name!r}: not prepared in {builder.data_dir} (segjax "
                "downloads nothing; prepare it in array_record format where there "
                "is internet, then set data.data_dir)"
            )
        splits = {
            ours: SplitSource(
                tfds.data_source(name, split=theirs, data_dir=data_dir),
                name,
                ours,
                spec.image_key,
                spec.mask_key,
                spec.name_key,
                spec.mask_offset,
            )
            for ours, theirs in spec.splits.items()
        }
        return Dataset(name, splits, _class_names(data, list(spec.class_names)), None)
    known = ["segjax_shapes", "segjax_shapes/small", "folder", *STANDARD]
    raise DataError(f"data.name={name!r} is not a known dataset; choose one of {known}")
