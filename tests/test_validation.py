"""Every config key is checked before a run writes anything: type and range, keys that must fit
together, and what needs the data (splits, classes, channels, the best metric, model options)."""

import dataclasses
import pathlib

import pytest

from configs.resnet_unet import get_config
from segjax.data import DataError
from segjax.errors import ConfigError
from segjax.experiments.spec import load_module
from segjax.losses import LOSSES, loss_options
from segjax.model_config import model_defaults, model_from_config
from segjax.models.detection import DetectionSettings
from segjax.validation import SCHEMA, check_config, check_with_data, flatten, metric_names


def config_with(**values):
    """The smoke config with ``values`` set (keys spelt with '__' for '.')."""
    config = get_config("smoke")
    for key, value in values.items():
        *parents, last = key.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        with node.ignore_type():
            node[last] = value
    return config


@pytest.mark.parametrize(
    "values,message",
    [
        ({"log_every_steps": 0}, "log_every_steps=0 is not valid; it must be an integer >= 1"),
        ({"seed": 10**20}, "seed=100000000000000000000 is not valid; it must be an integer >= 0"),
        ({"model__pretrained_sha256": "abc"}, "model.pretrained_sha256='abc' is not valid"),
        ({"model__pretrained_kind": "head"}, "model.pretrained_kind='head' is not valid"),
        ({"model__conv_impl": "fast"}, "model.conv_impl='fast' is not valid"),
        ({"model__pretrained_kind": "encoder"}, "model.pretrained_kind='encoder' without"),
        ({"optimizer__encoder_lr_factor": -1.0}, "optimizer.encoder_lr_factor=-1.0 is not valid"),
        ({"optimizer__freeze_encoder_steps": -2}, "optimizer.freeze_encoder_steps=-2 is not"),
        (
            {"model__arch": "unet_paper", "model__encoder": "", "model__pretrained": "w.pth"},
            "model.pretrained='w.pth' needs an encoder (ResNet, GhostNet",
        ),
        ({"eval_every_steps": 0}, "eval_every_steps=0 is not valid"),
        ({"checkpoint_every_steps": 0}, "checkpoint_every_steps=0 is not valid"),
        ({"accumulation_steps": 0}, "accumulation_steps=0 is not valid"),
        ({"batch_size": 0}, "batch_size=0 is not valid; it must be an integer >= 1"),
        ({"batch_size": -4}, "batch_size=-4 is not valid"),
        (
            {"batch_size": 6, "accumulation_steps": 4},
            "batch_size=6 must be a positive multiple of accumulation_steps x devices",
        ),
        ({"data__image_size": (-32, 32)}, "data.image_size=(-32, 32) is not valid"),
        ({"data__image_size": (32, 32, 32)}, "data.image_size=(32, 32, 32) is not valid"),
        ({"eval_split": "val"}, "eval_split='val' is not valid; it must be one of ['train',"),
        ({"data__channels": 2}, "data.channels=2 is not valid; it must be one of [1, 3, 4]"),
        ({"data__num_classes": 1}, "data.num_classes=1 is not valid"),
        ({"optimizer__warmup_steps": 6}, "optimizer.warmup_steps=6 must be less than"),
        ({"optimizer__name": "adam"}, "optimizer.name='adam' is not valid; it must be one of"),
        ({"optimizer__b2": 1.0}, "optimizer.b2=1.0 is not valid; it must be a number in [0, 1)"),
        ({"data__split_fractions": (0.5, 0.2, 0.2)}, "must sum to 1"),
        ({"data__augment__scale_range": (2.0, 1.0)}, "need low <= high"),
        ({"data__mean": (0.5, 0.5, 0.5)}, "data.mean=(0.5, 0.5, 0.5) and data.std=() must"),
        (
            {"model__arch": "unet_paper", "model__encoder": "", "model__dropout": 1.0},
            "model.dropout=1.0 is not valid; it must be in [0, 1)",
        ),
        ({"model__dropout": 0.2}, "model: unknown option(s) ['dropout'] for arch 'unet'"),
        ({"model__encoder_depth": 6}, "model.encoder_depth=6 is not valid; it must be an integer"),
        ({"model__deep_supervision": 1}, "model.deep_supervision=1 is not valid; it must be True"),
        ({"loss__weights__dice": -1.0}, "loss.weights.dice=-1.0 is not valid"),
        ({"loss__options__focal__gamma": -2.0}, "loss.options.focal.gamma=-2.0 is not valid"),
        (
            {"loss__weights__cross_entropy": 0.0, "loss__weights__dice": 0.0},
            "loss.weights select no loss",
        ),
        ({"loss__weights__binary_cross_entropy": 1.0}, "needs a model with one output channel"),
        # Options of another arch are not ignored: the factory names them.
        (
            {"model__deep_supervision": True},
            "model: unknown option(s) ['deep_supervision'] for arch 'unet'",
        ),
        ({"model__dropout": 0.2}, "model: unknown option(s) ['dropout'] for arch 'unet'"),
        ({"model__encoder": "resnet1000"}, "model.encoder='resnet1000' is not valid for arch"),
        ({"model__prune_level": 5, "model__arch": "unetpp"}, "model.prune_level=5 is not valid"),
    ],
)
def test_a_bad_key_is_named_with_what_is_allowed(values, message):
    with pytest.raises(ConfigError) as error:
        check_config(config_with(**values))
    assert message in str(error.value)


def test_sizes_and_unknown_keys():
    config = config_with(data__image_size=(64,), data__eval_size=48)
    normalised = check_config(config)
    assert normalised.data.image_size == (64, 64) and normalised.data.eval_size == (48, 48)
    assert config.data.image_size == (64,) and config.data.eval_size == 48  # left as it was
    config = get_config("smoke")
    config.optimizer.lr = 0.1  # not locked here, as a config file could do it
    with pytest.raises(ConfigError, match="config key 'optimizer.lr' is not known"):
        check_config(config)
    with pytest.raises(ConfigError, match="batch_size=4 must be a positive multiple of"):
        check_config(get_config("smoke"), device_count=8)


CONFIGS = sorted((pathlib.Path(__file__).parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_and_variant_passes_and_every_key_has_a_rule(path):
    module = load_module(str(path), "config")
    for variant in ("smoke", "small", "dsb2018", None):
        config = module.get_config(variant)
        check_config(config)
        keys = {k for k, v in flatten(config).items() if v != {}}
        assert keys == set(SCHEMA)


def test_every_loss_and_its_options_are_config_keys():
    config = get_config()
    assert set(config.loss.weights) == set(LOSSES)
    for name, options in loss_options().items():
        assert dict(config.loss.options[name]) == options
    assert loss_options()["focal"] == {"gamma": 2.0}  # the signature's default


def test_model_options_of_the_arch_reach_the_factory():
    config = config_with(model__arch="unetpp", model__deep_supervision=True, model__prune_level=2)
    model = model_from_config(config.model, 4, 3)
    assert model.deep_supervision and model.decoder.prune_level == 2
    detection = {f.name for f in dataclasses.fields(DetectionSettings)}
    assert set(model_defaults()) == {
        "encoder_depth", "decoder_channels", "attention", "decoder_block", "dtype",
        "freeze_encoder_bn", "deep_supervision", "prune_level", "filters", "dropout", "norm",
        "conv_impl", "pyramid", "pyramid_channels", "pyramid_repeats", *detection,
    }  # fmt: skip
    frozen = model_from_config(config_with(model__freeze_encoder_bn=True).model, 4, 3)
    assert frozen.freeze_encoder_bn and not model.freeze_encoder_bn
    assert model.conv_impl == "auto"
    assert model_from_config(config_with(model__conv_impl="lax").model, 4, 3).conv_impl == "lax"


@dataclasses.dataclass
class FakeSplit:
    size: int
    channels: int = 3

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        import numpy as np

        return {"image": np.zeros((4, 4, self.channels), np.uint8)}


@dataclasses.dataclass
class FakeDataset:
    name: str = "fake"
    class_names: tuple = ("background", "cell")

    @property
    def num_classes(self):
        return len(self.class_names)

    def split(self, split):
        if split == "validation":
            raise DataError(f"dataset {self.name!r} has an empty {split!r} split")
        return FakeSplit(3)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"best_metric": "mIoU"}, "best_metric='mIoU' is not a metric this run logs"),
        ({"eval_split": "validation"}, "dataset 'fake' has an empty 'validation' split"),
        ({"data__channels": 1}, "data.channels=1 but 'fake' images have 3 channels"),
        (
            {"data__mean": (0.5,), "data__std": (0.2,)},
            "data.mean=(0.5,) and data.std have 1 values but the images have 3 channels",
        ),
        (
            {"loss__options__cross_entropy__class_weights": (1.0, 2.0, 3.0)},
            "class_weights=(1.0, 2.0, 3.0) has 3 values but the dataset has 2 classes",
        ),
    ],
)
def test_what_needs_the_data(values, message):
    config = config_with(**{"eval_split": "test", **values})
    check_config(config)
    with pytest.raises((ConfigError, DataError)) as error:
        check_with_data(config, FakeDataset(), 3)
    assert message in str(error.value)


def test_best_metric_may_be_any_logged_metric():
    assert metric_names(("background", "cell"))[:5] == [
        "miou", "dice", "precision", "recall", "pixel_accuracy",
    ]  # fmt: skip
    config = config_with(eval_split="test", best_metric="iou/cell")
    check_config(config)
    model = check_with_data(config, FakeDataset(), 3)
    assert model.in_channels == 3
