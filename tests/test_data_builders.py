"""TFDS builders: the embedded synthetic dataset, image/mask folders, standard datasets by name,
and a clear error for each kind of bad input."""

import glob
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import segjax.data.sources  # noqa: F401  (registers the builders)
from segjax.data import DataError, load_dataset
from segjax.data.shapes import CLASS_NAMES, ShapesConfig
from tests.conftest import varied_items, write_folder


def data_config(**overrides):
    from configs.default import get_config

    data = get_config().data
    data.update(overrides)
    return data


def build_shapes(data_dir, seed):
    config = ShapesConfig(
        name=f"tiny_seed{seed}",
        image_size=32,
        num_train=12,
        num_validation=4,
        num_test=4,
        seed=seed,
    )
    builder = tfds.builder(
        "segjax_shapes", config=config, data_dir=str(data_dir), file_format="array_record"
    )
    builder.download_and_prepare()
    files = sorted(glob.glob(os.path.join(builder.data_dir, "*.array_record*")))
    return {os.path.basename(f).replace(f"seed{seed}", ""): open(f, "rb").read() for f in files}


def test_shapes_builds_are_identical_for_one_seed(tmp_path):
    first = build_shapes(tmp_path / "a", seed=0)
    assert len(first) == 3
    assert first == build_shapes(tmp_path / "b", seed=0)
    assert first != build_shapes(tmp_path / "c", seed=1)


def test_shapes_examples(shapes_small):
    assert shapes_small.class_names == CLASS_NAMES
    assert {s: len(v) for s, v in shapes_small.splits.items()} == {
        "train": 96,
        "validation": 20,
        "test": 23,
    }
    example = shapes_small.split("train")[0]
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert example["mask"].shape == (64, 64)
    counts = np.bincount(
        np.concatenate([shapes_small.split("train")[i]["mask"].ravel() for i in range(30)]),
        minlength=5,
    )
    assert counts[4] == 0 and (counts[:4] > 0).all()  # background and all three shapes


def test_builder_is_registered_by_name():
    assert tfds.builder_cls("segjax_shapes").__name__ == "SegjaxShapes"
    assert tfds.builder_cls("segjax_folder").__name__ == "SegjaxFolder"


def test_folder_with_splits_reads_every_format(tmp_path, tfds_dir):
    items = varied_items(6)
    splits = {
        "train": ["img00", "img01", "img02", "img03"],
        "validation": ["img04"],
        "test": ["img05"],
    }
    root = write_folder(tmp_path / "data", items, splits=splits)
    dataset = load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir, num_classes=2))
    assert {s: len(v) for s, v in dataset.splits.items()} == {
        "train": 4,
        "validation": 1,
        "test": 1,
    }
    train = dataset.split("train")
    names = sorted(train[i]["name"] for i in range(len(train)))
    assert names == splits["train"]
    for i in range(len(train)):
        example = train[i]
        image, _, mask = items[example["name"]]
        assert example["image"].shape == (*image.shape[:2], 3)  # greyscale and RGBA made RGB
        np.testing.assert_array_equal(example["mask"], mask // 255)  # binary 0/255 -> 0/1
    rgb = next(train[i] for i in range(len(train)) if train[i]["name"] == "img00")
    np.testing.assert_array_equal(rgb["image"], items["img00"][0])  # PNG is lossless


def test_folder_without_splits_is_split_by_seeded_fractions(tmp_path, tfds_dir):
    root = write_folder(tmp_path / "data", varied_items(10))
    config = data_config(
        name="folder", path=root, data_dir=tfds_dir, num_classes=2, split_fractions=(0.6, 0.2, 0.2)
    )
    dataset = load_dataset(config)
    names = {
        s: sorted(src[i]["name"] for i in range(len(src))) for s, src in dataset.splits.items()
    }
    assert [len(names[s]) for s in ("train", "validation", "test")] == [6, 2, 2]
    assert sorted(sum(names.values(), [])) == sorted(varied_items(10))
    assert load_dataset(config).split("test")[0]["name"] in names["test"]  # same split again


def test_folder_classes_json_and_ignore_label(tmp_path, tfds_dir):
    mask = np.array([[0, 1, 2], [255, 2, 1]], np.uint8).repeat(4, 0).repeat(4, 1)
    image = np.zeros((*mask.shape, 3), np.uint8)
    root = write_folder(
        tmp_path / "data",
        {"a": (image, ".png", mask)},
        splits={"train": ["a"]},
        classes={"classes": ["bg", "cell", "edge"], "ignore_label": 255},
    )
    dataset = load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir))
    assert dataset.class_names == ("bg", "cell", "edge") and dataset.ignore_label == 255
    np.testing.assert_array_equal(dataset.split("train")[0]["mask"], mask)


def test_editing_the_folder_rebuilds(tmp_path, tfds_dir):
    items = varied_items(4)
    root = write_folder(tmp_path / "data", items, splits={"train": list(items)})
    config = data_config(name="folder", path=root, data_dir=tfds_dir, num_classes=2)
    assert len(load_dataset(config).split("train")) == 4
    write_folder(root, varied_items(5), splits={"train": list(varied_items(5))})
    assert len(load_dataset(config).split("train")) == 5


def test_standard_dataset_by_name(tmp_path, monkeypatch):
    """oxford_iiit_pet, prepared in the data dir by the real builder's feature spec with a few
    generated examples (nothing is downloaded): its trimap 1/2/3 becomes classes 0/1/2."""
    pets_cls = tfds.builder_cls("oxford_iiit_pet")
    rng = np.random.default_rng(0)

    def examples(count):
        for i in range(count):
            trimap = rng.integers(1, 4, (16, 20, 1), dtype=np.uint8)
            yield (
                f"pet{i}",
                {
                    "image": segjax.data.png.encode_png(
                        rng.integers(0, 256, (16, 20, 3), np.uint8)
                    ),
                    "segmentation_mask": segjax.data.png.encode_png(trimap),
                    "label": 0,
                    "species": 0,
                    "file_name": f"pet{i}.jpg",
                    "head_bbox": tfds.features.BBox(0.1, 0.2, 0.5, 0.6),
                },
            )

    monkeypatch.setattr(
        pets_cls,
        "_split_generators",
        lambda self, dl_manager: {"train": examples(10), "test": examples(3)},
    )
    pets_cls(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()

    dataset = load_dataset(data_config(name="oxford_iiit_pet", data_dir=str(tmp_path)))
    assert dataset.class_names == ("pet", "background", "border")
    assert [len(dataset.split(s)) for s in ("train", "validation", "test")] == [9, 1, 3]
    masks = np.stack([dataset.split("train")[i]["mask"] for i in range(9)])
    assert set(np.unique(masks)) == {0, 1, 2}
    assert dataset.split("test")[0]["name"].startswith("pet")


# --- Bad input: each gets a DataError that names the file or key at fault. ---


def test_corrupt_image_names_the_file(tmp_path, tfds_dir):
    root = write_folder(
        tmp_path / "data", varied_items(3), splits={"train": ["img00", "img01", "img02"]}
    )
    with open(os.path.join(root, "images", "img01.jpg"), "wb") as f:
        f.write(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"img01\.jpg: cannot read image"):
        load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir, num_classes=2))


def test_missing_mask_names_the_image(tmp_path, tfds_dir):
    items = varied_items(3)
    items["img01"] = (items["img01"][0], ".jpg", None)
    root = write_folder(tmp_path / "data", items)
    with pytest.raises(DataError, match=r"img01\.jpg: no mask .*masks/img01\.png"):
        load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir, num_classes=2))


def test_mask_of_another_size_names_both_files(tmp_path, tfds_dir):
    items = varied_items(2)
    image, suffix, mask = items["img01"]
    items["img01"] = (image, suffix, mask[:-2])
    root = write_folder(tmp_path / "data", items, splits={"train": ["img00", "img01"]})
    data_dir = tmp_path / "tfds"  # its own, to see what a failed preparation leaves
    with pytest.raises(
        DataError,
        match=r"img01\.png: mask is 21x29 but image .*img01\.jpg is "
        r"23x29",
    ):
        load_dataset(data_config(name="folder", path=root, data_dir=str(data_dir), num_classes=2))
    leftovers = [os.path.relpath(d, data_dir) for d, _, _ in os.walk(data_dir)]
    assert "segjax_folder" not in {p.split(os.sep)[0] for p in leftovers}, leftovers


def test_mask_values_outside_the_classes_name_the_file(tmp_path, tfds_dir):
    mask = np.full((8, 8), 3, np.uint8)
    root = write_folder(
        tmp_path / "data",
        {"a": (np.zeros((8, 8, 3), np.uint8), ".png", mask)},
        splits={"train": ["a"]},
        classes={"classes": ["bg", "fg", "edge"]},
    )
    with pytest.raises(DataError, match=r"masks/a\.png: mask values \[3\] are outside 0\.\.2"):
        load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir))


def test_empty_split_is_named(tmp_path, tfds_dir):
    root = write_folder(
        tmp_path / "data", varied_items(2), splits={"train": ["img00", "img01"], "validation": []}
    )
    dataset = load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir, num_classes=2))
    with pytest.raises(DataError, match="has an empty 'validation' split"):
        dataset.split("validation")


def test_splits_json_naming_a_missing_image(tmp_path, tfds_dir):
    root = write_folder(tmp_path / "data", varied_items(2), splits={"train": ["img00", "img07"]})
    with pytest.raises(DataError, match=r"splits\.json: split 'train' lists \['img07'\]"):
        load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir, num_classes=2))


def test_bad_classes_json(tmp_path, tfds_dir):
    root = write_folder(tmp_path / "data", varied_items(1), classes={"names": ["a"]})
    with pytest.raises(DataError, match=r"classes\.json: expected"):
        load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"name": "cityscapes_fine"},
            r"data\.name='cityscapes_fine' is not a known dataset; choose "
            r"one of \['segjax_shapes'",
        ),
        ({"name": "segjax_shapes/huge"}, r"data\.name='segjax_shapes/huge'"),
        (
            {"name": "folder", "path": "/no/such/dir"},
            r"data\.path='/no/such/dir': no such directory",
        ),
        ({"name": "oxford_iiit_pet"}, r"not prepared in .*segjax downloads nothing"),
    ],
)
def test_bad_dataset_names_and_paths(tmp_path, overrides, message):
    with pytest.raises(DataError, match=message):
        load_dataset(data_config(data_dir=str(tmp_path), **overrides))


def test_num_classes_must_agree_with_the_dataset(small_config):
    data = ml_collections.ConfigDict(small_config.data.to_dict())
    data.num_classes = 3
    with pytest.raises(
        DataError,
        match=r"data\.num_classes=3 but dataset 'segjax_shapes/small' "
        r"has 4 classes",
    ):
        load_dataset(data)


def test_folder_without_class_list_needs_num_classes(tmp_path, tfds_dir):
    root = write_folder(tmp_path / "data", varied_items(2))
    with pytest.raises(DataError, match=r"set data\.num_classes"):
        load_dataset(data_config(name="folder", path=root, data_dir=tfds_dir))
