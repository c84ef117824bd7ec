"""``segjax_folder``: a TFDS builder for a user's own images and masks.

Layout::

    root/images/<stem>.<png|jpg|jpeg|tif|tiff|bmp>   any size; read as greyscale, RGB or RGBA
    root/masks/<stem>.png                            class ids, or 0/255 for a binary mask
    root/instances/<stem>.png optional, for instance segmentation: 8- or 16-bit label map,
                              0 = background, k > 0 = one id per object (all images or none)
    root/splits.json      optional {"train": [stems], "validation": [...], "test": [...]}
    root/classes.json     optional {"classes": ["background", ...], "ignore_label": 255}

Without splits.json the stems are split by ``fractions`` with a seeded shuffle. Masks whose values
are all 0 or 255 are binary (255 becomes 1) unless 255 is the ignore label. Every file is checked
while building, and a bad one stops the build with a ``DataError`` naming it; with classes.json
every mask's values are checked against the classes. The values seen, each with the first mask
holding it, are kept in the dataset's metadata (``mask_values``), so that a class count given
without classes.json can be checked against every mask before training.

The prepared copy lives under ``data_dir/segjax_folder/<folder name>_<fingerprint>/``; the
fingerprint covers the root, every file's name, size and modification time, and the options, so
editing the folder makes a new build rather than serving stale data.

    builder = tfds.builder("segjax_folder", root="path/to/data", file_format="array_record")
"""

import dataclasses
import hashlib
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from segjax.data.errors import DataError
from segjax.data.images import (
    IMAGE_SUFFIXES,
    check_mask_values,
    load_image,
    load_instances,
    load_mask,
)
from segjax.data.png import encode_label_map, encode_png
from segjax.files import read_json

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
    root: str = ""
    channels: int = 3
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    split_seed: int = 0


def _files_by_stem(directory: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: no such directory (expected root/images and root/masks)")
    files: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in suffixes:
            if stem in files:
                raise DataError(
                    f"{os.path.join(directory, name)}: two files share the stem "
                    f"{stem!r} ({os.path.basename(files[stem])})"
                )
            files[stem] = os.path.join(directory, name)
    return files


def read_classes(root: str) -> tuple[list[str] | None, int | None]:
    """Class names and ignore label from root/classes.json, or (None, None)."""
    path = os.path.join(root, "classes.json")
    content = read_json(path, DataError)
    if content is None:
        return None, None
    classes = content.get("classes") if isinstance(content, dict) else None
    if (
        not isinstance(classes, list)
        or not all(isinstance(c, str) for c in classes)
        or len(classes) < 2
    ):
        raise DataError(
            f'{path}: expected {{"classes": [at least two names], "ignore_label": optional int}}'
        )
    ignore = content.get("ignore_label")
    if ignore is not None and (not isinstance(ignore, int) or not 0 <= ignore <= 255):
        raise DataError(f"{path}: ignore_label={ignore!r} must be an integer in 0..255")
    return classes, ignore


def read_splits(root: str, stems: list[str], fractions, seed: int) -> dict[str, list[str]]:
    """The stems of each split, from root/splits.json or a seeded split by fractions."""
    path = os.path.join(root, "splits.json")
    content = read_json(path, DataError)
    if content is None:
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise DataError(
                f"fractions={tuple(fractions)!r}: need three non-negative fractions "
                "(train, validation, test) that sum to 1"
            )
        order = [stems[i] for i in np.random.default_rng(seed).permutation(len(stems))]
        n_train = round(fractions[0] * len(stems))
        n_val = round(fractions[1] * len(stems))
        return {
            "train": order[:n_train],
            "validation": order[n_train : n_train + n_val],
            "test": order[n_train + n_val :],
        }
    if not isinstance(content, dict) or not set(content) <= set(SPLITS):
        raise DataError(f"{path}: expected an object with keys among {list(SPLITS)}")
    known = set(stems)
    for split, members in content.items():
        missing = [s for s in members if s not in known]
        if missing:
            raise DataError(
                f"{path}: split {split!r} lists {missing[:5]} with no image in "
                f"{os.path.join(root, 'images')}"
            )
    return {split: list(content.get(split, [])) for split in SPLITS}


def fingerprint(root: str, options: tuple) -> str:
    digest = hashlib.sha256(repr((os.path.abspath(root), options)).encode())
    for sub in ("images", "masks", "instances"):
        directory = os.path.join(root, sub)
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            stat = os.stat(os.path.join(directory, name))
            digest.update(f"{sub}/{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for name in ("splits.json", "classes.json"):
        path = os.path.join(root, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:12]


class SegjaxFolder(tfds.core.GeneratorBasedBuilder):
    """Images and masks from a folder (see the module docstring for the layout)."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Mask values seen at preparation in the metadata; 4-channel images.",
        "1.2.0": "Optional instance label maps (root/instances).",
    }
    BUILDER_CONFIG_CLS = FolderConfig

    def __init__(
        self,
        *,
        root: str | None = None,
        channels: int = 3,
        fractions=DEFAULT_FRACTIONS,
        split_seed: int = 0,
        config=None,
        **kwargs,
    ):
        if config is None:
            if not root:
                raise DataError("segjax_folder needs root=<folder with images/ and masks/>")
            if not os.path.isdir(root):
                raise DataError(f"{root}: no such directory")
            options = (channels, tuple(fractions), split_seed)
            name = re.sub(r"[^a-z0-9_]", "_", os.path.basename(os.path.abspath(root)).lower())
            config = FolderConfig(
                name=f"{name}_{fingerprint(root, options)}",
                root=os.path.abspath(root),
                channels=channels,
                fractions=tuple(fractions),
                split_seed=split_seed,
            )
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        channels = self.builder_config.channels
        classes, ignore = read_classes(self.builder_config.root)
        features = {
            "image": tfds.features.Image(shape=(None, None, channels)),
            "mask": tfds.features.Image(shape=(None, None, 1)),
            "name": tfds.features.Text(),
        }
        has_instances = os.path.isdir(os.path.join(self.builder_config.root, "instances"))
        if has_instances:  # PNG bytes: TFDS decodes 16-bit images only with OpenCV
            features["instances"] = tfds.features.Tensor(shape=(), dtype=np.object_)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Images and masks from {self.builder_config.root}",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(
                class_names=classes,
                ignore_label=ignore,
                mask_values={},
                has_instances=has_instances,
            ),
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        images = _files_by_stem(os.path.join(c.root, "images"), IMAGE_SUFFIXES)
        masks = _files_by_stem(os.path.join(c.root, "masks"), (".png",))
        if not images:
            raise DataError(
                f"{os.path.join(c.root, 'images')}: no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        missing = [images[s] for s in images if s not in masks]
        if missing:
            raise DataError(
                f"{missing[0]}: no mask {os.path.join(c.root, 'masks', '')}"
                f"{os.path.splitext(os.path.basename(missing[0]))[0]}.png"
                + (
                    f" (and {len(missing) - 1} more images without masks)"
                    if len(missing) > 1
                    else ""
                )
            )
        instances = None
        if os.path.isdir(os.path.join(c.root, "instances")):
            instances = _files_by_stem(os.path.join(c.root, "instances"), (".png",))
            missing = [s for s in images if s not in instances]
            if missing:
                raise DataError(
                    f"{images[missing[0]]}: no instance map "
                    f"{os.path.join(c.root, 'instances', missing[0])}.png (an instances/ folder "
                    f"needs one per image; {len(missing)} missing)"
                )
        splits = read_splits(c.root, sorted(images), c.fractions, c.split_seed)
        classes, ignore = read_classes(c.root)
        pairs = {s: (images[s], masks[s], instances[s] if instances else None) for s in images}
        # Class count: from classes.json, else from the masks themselves (checked in one pass).
        num_classes = len(classes) if classes else None
        return {
            split: self._generate_examples([(s, *pairs[s]) for s in stems], num_classes, ignore)
            for split, stems in splits.items()
            if stems
        }

    def _generate_examples(self, items, num_classes, ignore_label):
        channels = self.builder_config.channels
        for stem, image_path, mask_path, instances_path in items:
            image = load_image(image_path, channels)
            mask = load_mask(mask_path, ignore_label)
            if mask.shape != image.shape[:2]:
                raise DataError(
                    f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but "
                    f"image {image_path} is {image.shape[0]}x{image.shape[1]}"
                )
            extra = {}
            if instances_path is not None:
                instances = load_instances(instances_path)
                if instances.shape != image.shape[:2]:
                    raise DataError(
                        f"{instances_path}: instance map is {instances.shape[0]}x"
                        f"{instances.shape[1]} but image {image_path} is "
                        f"{image.shape[0]}x{image.shape[1]}"
                    )
                extra["instances"] = encode_label_map(instances)
            if num_classes is not None:
                check_mask_values(mask_path, mask, num_classes, ignore_label)
            seen = self.info.metadata["mask_values"]  # saved with the prepared dataset
            for value in np.unique(mask):
                seen.setdefault(str(int(value)), mask_path)
            yield (
                stem,
                {
                    "image": encode_png(image),
                    "mask": encode_png(mask[..., None]),
                    "name": stem,
                    **extra,
                },
            )
