"""Instance maps through the builders and the training pipeline's detection targets."""

import os

import numpy as np
import pytest
from PIL import Image

from segjax.data import DataError, load_dataset, train_iterator
from segjax.data.instances import instance_targets
from tests.conftest import write_folder


def nuclei_folder(root, count=4, size=(40, 48), seed=0):
    """A folder dataset of disc-shaped 'nuclei': masks 0/255, 16-bit instance maps (ids > 255)."""
    rng = np.random.default_rng(seed)
    items, maps = {}, {}
    yy, xx = np.mgrid[: size[0], : size[1]]
    for i in range(count):
        labels = np.zeros(size, np.uint16)
        for k in range(5):
            cy, cx, r = rng.uniform(4, size[0] - 4), rng.uniform(4, size[1] - 4), rng.uniform(3, 7)
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 300 + 7 * k
        image = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
        image[labels > 0] += 150
        items[f"n{i}"] = (image, ".png", np.where(labels > 0, 255, 0).astype(np.uint8))
        maps[f"n{i}"] = labels
    splits = {"train": [f"n{i}" for i in range(count - 1)], "validation": [f"n{count - 1}"]}
    write_folder(root, items, splits)
    os.makedirs(os.path.join(root, "instances"))
    for stem, labels in maps.items():
        Image.fromarray(labels).save(os.path.join(root, "instances", stem + ".png"))
    return str(root), maps


def folder_config(root, tfds_dir):
    from configs.default import get_config

    config = get_config()
    config.data.name, config.data.path, config.data.data_dir = "folder", root, tfds_dir
    config.data.num_classes, config.data.class_names = 2, ("background", "nucleus")
    config.data.image_size = (32, 32)
    return config


def test_folder_builder_reads_16_bit_instance_maps(tmp_path, tfds_dir):
    root, maps = nuclei_folder(tmp_path / "nuclei")
    dataset = load_dataset(folder_config(root, tfds_dir).data)
    assert dataset.has_instances
    example = dataset.split("train")[1]
    np.testing.assert_array_equal(example["instances"], maps[example["name"]].astype(np.int32))
    assert example["instances"].max() > 255


def test_folder_builder_names_a_missing_or_mismatched_instance_map(tmp_path, tfds_dir):
    root, _ = nuclei_folder(tmp_path / "missing")
    os.remove(os.path.join(root, "instances", "n2.png"))
    with pytest.raises(DataError, match=r"no instance map .*instances/n2\.png"):
        load_dataset(folder_config(root, tfds_dir).data)
    root, _ = nuclei_folder(tmp_path / "mismatch")
    Image.fromarray(np.zeros((5, 5), np.uint16)).save(os.path.join(root, "instances", "n1.png"))
    with pytest.raises(DataError, match=r"instances/n1\.png: instance map is 5x5 but image"):
        load_dataset(folder_config(root, tfds_dir).data)


def test_instance_targets_boxes_classes_and_dropped_objects():
    instances = np.zeros((10, 12), np.int32)
    instances[1:4, 2:6] = 5  # 12 pixels, class 1
    instances[6:9, 0:2] = 9  # 6 pixels, class 2
    instances[9, 11] = 3  # a 1-pixel remnant
    instances[0, 8:11] = 4  # 3 pixels on background: dropped
    mask = np.where(instances == 9, 2, np.where(np.isin(instances, (5, 3)), 1, 0))
    valid = np.ones_like(mask, bool)
    out = instance_targets(instances, mask, valid, 3, max_instances=4, min_area=2)
    np.testing.assert_array_equal(out["boxes"][:2], [[2, 1, 6, 4], [0, 6, 2, 9]])
    np.testing.assert_array_equal(out["classes"], [1, 2, 0, 0])
    np.testing.assert_array_equal(out["boxes"][2:], 0)
    assert set(np.unique(out["instances"])) == {0, 1, 2}
    assert out["instances"][9, 11] == 0 and out["instances"][0, 9] == 0
    # With one slot, the larger object is kept.
    one = instance_targets(instances, mask, valid, 3, max_instances=1, min_area=2)
    np.testing.assert_array_equal(one["boxes"], [[2, 1, 6, 4]])
    assert one["instances"].max() == 1 and (one["instances"] == 1).sum() == 12


def test_training_targets_follow_the_augmentation(tmp_path, tfds_dir):
    root, _ = nuclei_folder(tmp_path / "augmented", count=5)
    config = folder_config(root, tfds_dir)
    config.data.max_instances, config.data.min_instance_area = 6, 3
    config.data.augment.vflip = config.data.augment.rot90 = True
    config.data.augment.scale_range = (0.6, 1.6)
    dataset = load_dataset(config.data)
    batches = train_iterator(dataset, config.data, 4, seed=3, process_index=0, process_count=1)
    seen = 0
    for _ in range(6):
        batch = next(batches)
        assert batch["instances"].shape == (4, 32, 32) and batch["boxes"].shape == (4, 6, 4)
        for b in range(4):
            slots, label = batch["instances"][b], batch["label"][b]
            assert np.all(label[slots > 0] == 1)  # objects lie on the mask's foreground
            for k in range(6):
                pixels = np.argwhere(slots == k + 1)
                if batch["classes"][b, k] == 0:
                    assert len(pixels) == 0
                    continue
                seen += 1
                assert len(pixels) >= 3
                (y0, x0), (y1, x1) = pixels.min(0), pixels.max(0) + 1
                np.testing.assert_array_equal(batch["boxes"][b, k], [x0, y0, x1, y1])
    assert seen > 20
