"""Augmentation on the device (``data.augment.on_device``): the same batches as the host
pipeline's up to float rounding, deterministic, resumable and split over processes as the host
pipeline is, and refused where it cannot apply."""

import jax
import numpy as np
import pytest

from segjax.data import device_augment, load_dataset, train_iterator
from segjax.data.pipeline import make_preprocess
from segjax.errors import ConfigError
from segjax.validation import check_config
from tests.conftest import varied_items, write_folder


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def with_augmentation(config, on_device: bool, **augment):
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.data.augment.on_device = on_device
        for key, value in augment.items():
            if key == "image_size":
                config.data.image_size = value
            else:
                config.data.augment[key] = value
    return config


STRONG = {"scale_range": (0.5, 1.6), "vflip": True, "rot90": True, "color_jitter": 0.3}


def host_and_device_batches(dataset, config, steps: int, batch: int = 8):
    host = take(train_iterator(dataset, config.data, batch, 0, 0, 1), steps)
    device_config = with_augmentation(config, True)
    preprocess = make_preprocess(dataset, device_config.data)
    augment = jax.jit(lambda b: device_augment.augment_batch(b, preprocess))
    raw = take(train_iterator(dataset, device_config.data, batch, 0, 0, 1), steps)
    return host, [jax.device_get(augment(b)) for b in raw], raw


def assert_same_augmentation(host, device):
    for h, d in zip(host, device, strict=True):
        assert set(d) == set(h) and all(d[k].shape == h[k].shape for k in h)
        np.testing.assert_array_equal(d["index"], h["index"])
        # Nearest-neighbour samples on a pixel edge may round the other way in float32.
        assert (d["valid"] == h["valid"]).mean() > 0.995
        assert (d["label"] == h["label"]).mean() > 0.995
        both = d["valid"] & h["valid"]
        difference = np.abs(d["image"] - h["image"])[both]
        assert np.median(difference) < 1e-5  # most pixels: the same uint8 value, normalised
        assert np.mean(difference < 0.02) > 0.99  # the rest within one or two grey levels


@pytest.mark.parametrize(
    "augment",
    [{}, STRONG, {**STRONG, "image_size": (40, 56)}, {**STRONG, "scale_range": (0.3, 0.4)}],
    ids=["default", "strong", "non-square", "zoomed-out"],
)
def test_device_augmentation_gives_the_host_pipelines_batches(shapes_small, small_config, augment):
    config = with_augmentation(small_config, False, **augment)
    host, device, raw = host_and_device_batches(shapes_small, config, 3)
    assert_same_augmentation(host, device)
    if augment.get("scale_range") == (0.3, 0.4):  # windows larger than the 64x64 images
        assert not all(b["valid"].all() for b in host)
        window = raw[0]["window_image"].shape[1:3]
        assert window == (int(np.ceil(63 / 0.3)) + 3,) * 2  # augment.window_shape


def test_device_augmentation_of_varied_sizes_and_channels(tmp_path, tfds_dir):
    """Greyscale, RGB and RGBA images of several sizes (a folder dataset), binary masks."""
    from configs.default import get_config

    root = tmp_path / "folder"
    write_folder(str(root), varied_items(12), splits={"train": [f"img{i:02d}" for i in range(12)]})
    for channels in (1, 3, 4):
        config = get_config("small")
        with config.unlocked():
            config.data.name, config.data.path = "folder", str(root)
            config.data.data_dir, config.data.channels = tfds_dir, channels
            config.data.num_classes = 2
            config.data.image_size = (32, 32)
        config = with_augmentation(config, False, **STRONG)
        dataset = load_dataset(config.data)
        host, device, _ = host_and_device_batches(dataset, config, 2, batch=4)
        assert host[0]["image"].shape[-1] == channels
        assert_same_augmentation(host, device)


def test_raw_batches_are_deterministic_resumable_and_split_over_processes(
    shapes_small, small_config
):
    """What the host pipeline promises holds for the raw batches: the same seed gives the same
    batches, a restored state continues as if never stopped, and two processes read disjoint
    halves of the one-process global batches."""
    data = with_augmentation(small_config, True, **STRONG).data
    first = take(train_iterator(shapes_small, data, 8, 0, 0, 1), 9)
    again = train_iterator(shapes_small, data, 8, 0, 0, 1)
    take(again, 5)
    state = again.get_state()
    resumed = train_iterator(shapes_small, data, 8, 0, 0, 1)
    resumed.set_state(state)
    for expected, got in zip(first[5:], take(resumed, 4), strict=True):
        for key in expected:
            np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
    assert set(first[0]) == {*device_augment.RAW_KEYS, "index"}
    halves = [take(train_iterator(shapes_small, data, 8, 0, p, 2), 2) for p in (0, 1)]
    for step in range(2):
        assert not set(halves[0][step]["index"]) & set(halves[1][step]["index"])
        for key in first[step]:
            joined = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(joined, first[step][key], err_msg=key)
    other_seed = next(train_iterator(shapes_small, data, 8, 1, 0, 1))
    assert not np.array_equal(other_seed["window_origin"], first[0]["window_origin"])


def test_on_device_is_refused_where_it_cannot_apply(small_config):
    from segjax.defaults import instance_config

    whole = with_augmentation(small_config, True, whole_image=True)
    with pytest.raises(ConfigError, match="data.augment.on_device=True needs crops of one shape"):
        check_config(whole)
    instances = instance_config("smoke", "fpn")
    with instances.unlocked():
        instances.data.augment.on_device = True
    with pytest.raises(ConfigError, match="does not make instance targets"):
        check_config(instances)
