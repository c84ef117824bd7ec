"""Every config key checked before a run writes a file or builds a model.

``check_config`` checks each key's type and range and the keys that must fit together, without
touching the data; ``check_with_data`` then checks what needs the dataset: its splits, classes
and channels, the metric that picks the best checkpoint, and the model's options (through
``create_model``'s own errors). Each failure is a ``ConfigError`` naming the key, its value and
what is allowed.
"""

import math
import re
from collections.abc import Callable
from typing import Any

import ml_collections

from segjax.data.errors import DataError
from segjax.data.folder import SPLITS
from segjax.errors import ConfigError, check_batch_size
from segjax.losses import DEEP_SUPERVISION_MODES, LOSSES, loss_options
from segjax.model_config import (
    PRETRAINED_KEYS,
    PRETRAINED_KINDS,
    model_defaults,
    model_from_config,
)
from segjax.models.detection import PYRAMIDS
from segjax.models.factory import INSTANCE_ARCHS
from segjax.optim import OPTIMIZERS, SCHEDULES

# A rule normalises a value or returns None if it is not allowed; its text says what is.
Rule = tuple[Callable[[Any], Any], str]
INSTANCE_METRICS = ("dsb_score", "mask_ap", "mask_ap50", "mask_ap75")
SUMMARY_METRICS = ("miou", "dice", "precision", "recall", "pixel_accuracy")
PER_CLASS_METRICS = ("iou", "dice")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# Counts, steps and seeds end up in int32 arrays (step counters, PRNG seeds): larger ones would
# overflow deep inside JAX, so every integer key is at most this.
INT32_MAX = 2**31 - 1


def integer(low: int, high: int | None = None) -> Rule:
    def check(value):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        return value if ok and value <= (INT32_MAX if high is None else high) else None

    if high is None:
        return check, f"an integer >= {low} (at most {INT32_MAX})"
    return check, f"an integer in {low}..{high}"


def real(low: float, high: float | None = None, below_high: bool = False) -> Rule:
    def check(value):
        if not _number(value) or value < low:
            return None
        if high is not None and (value >= high if below_high else value > high):
            return None
        return float(value)

    if high is None:
        return check, f"a number >= {low:g}"
    return check, f"a number in [{low:g}, {high:g}{')' if below_high else ']'}"


def boolean() -> Rule:
    return (lambda v: v if isinstance(v, bool) else None), "True or False"


def choice(values) -> Rule:
    values = tuple(values)
    return (lambda v: v if v in values and type(v) is type(values[0]) else None), (
        f"one of {list(values)}"
    )


def text() -> Rule:
    return (lambda v: v if isinstance(v, str) else None), "a string"


def numbers(length: int | None = None, low: float = -math.inf, empty: bool = False) -> Rule:
    def check(value):
        if not isinstance(value, list | tuple) or not all(_number(v) and v >= low for v in value):
            return None
        if (length is not None and len(value) != length) and not (empty and not value):
            return None
        return tuple(value) if value or empty else None

    count = f"{length} numbers" if length else "numbers"
    bound = f" >= {low:g}" if low > -math.inf else ""
    return check, f"{count}{bound}" + (", or () for the default" if empty else "")


def sizes(empty: bool = False) -> Rule:
    """(height, width) of positive integers; one number means a square."""

    def check(value):
        pair = (value,) if isinstance(value, int) else value
        if not isinstance(pair, list | tuple):
            return None
        if empty and len(pair) == 0:
            return ()
        pair = tuple(pair) * 2 if len(pair) == 1 else tuple(pair)
        ok = len(pair) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        return pair if ok and min(pair) > 0 else None

    return check, "a positive size or (height, width)" + (", or () for full size" if empty else "")


def channel_list() -> Rule:
    def check(value):
        if not isinstance(value, list | tuple):
            return None
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        return tuple(value) if ok else None

    return check, "positive integers, or () for the default"


def names() -> Rule:
    return (
        lambda v: (
            tuple(v)
            if isinstance(v, list | tuple) and all(isinstance(n, str) and n for n in v)
            else None
        )
    ), "non-empty strings"


def sha256_digest() -> Rule:
    return (
        lambda v: v.lower() if isinstance(v, str) and re.fullmatch(r"|[0-9a-fA-F]{64}", v) else None
    ), "'' or 64 hexadecimal digits (sha256sum FILE)"


def _schema() -> dict[str, Rule]:
    schema: dict[str, Rule] = {
        "seed": integer(0),
        "total_steps": integer(1),
        "batch_size": integer(1),
        "accumulation_steps": integer(1),
        "log_every_steps": integer(1),
        "eval_every_steps": integer(1),
        "checkpoint_every_steps": integer(1),
        "keep_checkpoints": integer(1),
        "best_metric": text(),  # checked against the dataset's classes in check_with_data
        "eval_split": choice(SPLITS),
        "deep_supervision_mode": choice(DEEP_SUPERVISION_MODES),
        # create_model's options: their types here, their values (ranges, choices, what goes
        # with which arch) by the factory alone, which check_config calls (build_model).
        "model.arch": text(),
        "model.encoder": text(),
        "model.dtype": text(),
        "model.encoder_depth": integer(0),
        "model.decoder_channels": channel_list(),
        "model.decoder_block": text(),
        "model.attention": text(),
        "model.deep_supervision": boolean(),
        "model.prune_level": integer(0),
        "model.filters": channel_list(),
        "model.dropout": real(-math.inf),
        "model.norm": text(),
        "model.freeze_encoder_bn": boolean(),
        "model.conv_impl": text(),
        "model.pretrained": text(),
        "model.pretrained_kind": choice(PRETRAINED_KINDS),
        "model.pretrained_sha256": sha256_digest(),
        "optimizer.name": choice(OPTIMIZERS),
        "optimizer.learning_rate": real(0.0),
        "optimizer.warmup_steps": integer(0),
        "optimizer.schedule": choice(SCHEDULES),
        "optimizer.end_lr_factor": real(0.0, 1.0),
        "optimizer.power": real(0.0),
        "optimizer.weight_decay": real(0.0),
        "optimizer.b1": real(0.0, 1.0, below_high=True),
        "optimizer.b2": real(0.0, 1.0, below_high=True),
        "optimizer.momentum": real(0.0, 1.0, below_high=True),
        "optimizer.nesterov": boolean(),
        "optimizer.grad_clip_norm": real(0.0),
        "optimizer.encoder_lr_factor": real(0.0),
        "optimizer.freeze_encoder_steps": integer(0),
        "data.name": text(),
        "data.path": text(),
        "data.data_dir": text(),
        "data.channels": choice((1, 3, 4)),
        "data.split_fractions": numbers(3, low=0.0),
        "data.split_seed": integer(0),
        "data.num_classes": integer(0),
        "data.class_names": names(),
        "data.ignore_label": integer(0, 255),
        "data.image_size": sizes(),
        "data.eval_size": sizes(empty=True),
        "data.mean": numbers(empty=True),
        "data.std": numbers(low=1e-12, empty=True),
        "data.max_instances": integer(0),
        "data.min_instance_area": integer(1),
        "data.num_threads": integer(0),
        "data.num_workers": integer(-1),
        "data.prefetch": integer(0),
        "data.cache": boolean(),
        "data.augment.scale_range": numbers(2, low=1e-3),
        "data.augment.whole_image": boolean(),
        "data.augment.hflip": boolean(),
        "data.augment.vflip": boolean(),
        "data.augment.rot90": boolean(),
        "data.augment.color_jitter": real(0.0, 1.0),
        "data.augment.on_device": boolean(),
    }
    # Mask R-CNN's options: likewise, their types.
    for key, default in model_defaults().items():
        if f"model.{key}" in schema:
            continue
        if isinstance(default, tuple):
            schema[f"model.{key}"] = numbers(low=0.0)
        elif isinstance(default, bool):
            schema[f"model.{key}"] = boolean()
        elif isinstance(default, int):
            schema[f"model.{key}"] = integer(1)
        elif isinstance(default, float):
            schema[f"model.{key}"] = real(0.0)
        elif key == "pyramid":
            schema[f"model.{key}"] = choice(PYRAMIDS)
    assert set(model_defaults()) | {"arch", "encoder", *PRETRAINED_KEYS} == {
        k.removeprefix("model.") for k in schema if k.startswith("model.")
    }, "every create_model option needs a rule here"
    for name in LOSSES:
        schema[f"loss.weights.{name}"] = real(0.0)
    for name, options in loss_options().items():
        for option, default in options.items():
            if isinstance(default, tuple):
                schema[f"loss.options.{name}.{option}"] = numbers(low=0.0, empty=True)
            elif option == "label_smoothing":
                schema[f"loss.options.{name}.{option}"] = real(0.0, 1.0, below_high=True)
            else:
                schema[f"loss.options.{name}.{option}"] = real(0.0)
    return schema


SCHEMA = _schema()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': value} of a nested ConfigDict or dict; an empty mapping is a value of its own."""
    if isinstance(tree, ml_collections.ConfigDict):
        tree = tree.to_dict()
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix.rstrip("."): tree}
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def _error(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not valid; it must be {allowed}")


def check_config(
    config: ml_collections.ConfigDict, device_count: int = 1
) -> ml_collections.ConfigDict:
    """Checks every key and the keys that must agree, raising ``ConfigError`` naming the first
    key at fault; returns a normalised copy (sizes given as one number become (height, width)),
    leaving ``config`` as it was."""
    values = {k: v for k, v in flatten(config).items() if not (isinstance(v, dict) and not v)}
    unknown = sorted(set(values) - set(SCHEMA))
    if unknown:
        raise ConfigError(
            f"config key {unknown[0]!r} is not known (a typo?); see segjax/defaults.py for the "
            "keys a config has"
        )
    missing = sorted(set(SCHEMA) - set(values))
    if missing:
        raise ConfigError(
            f"config key {missing[0]!r} is missing; build configs on segjax.defaults.base_config"
        )
    normalised = {}
    for key, (check, allowed) in SCHEMA.items():
        value = check(values[key])
        if value is None:
            raise _error(key, values[key], allowed)
        normalised[key] = value
    config = config.copy_and_resolve_references()
    for key in ("data.image_size", "data.eval_size"):
        if normalised[key] != values[key]:
            _set(config, key, normalised[key])

    total, batch = config.total_steps, config.batch_size
    if config.optimizer.warmup_steps >= total:
        raise ConfigError(
            f"optimizer.warmup_steps={config.optimizer.warmup_steps} must be less than "
            f"total_steps={total}"
        )
    check_batch_size(
        batch,
        config.accumulation_steps * device_count,
        f"accumulation_steps x devices ({config.accumulation_steps} x {device_count})",
        ConfigError,
    )
    fractions = normalised["data.split_fractions"]
    if abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"data.split_fractions={fractions!r} must sum to 1 (train, validation, test)"
        )
    low, high = normalised["data.augment.scale_range"]
    if low > high:
        raise ConfigError(f"data.augment.scale_range=({low}, {high}): need low <= high")
    if config.data.augment.on_device and config.data.augment.whole_image:
        raise ConfigError(
            "data.augment.on_device=True needs crops of one shape; with data.augment.whole_image="
            "True each image is resized on the host, so set on_device=False"
        )
    if config.data.augment.on_device and config.data.max_instances > 0:
        raise ConfigError(
            f"data.augment.on_device=True does not make instance targets (data.max_instances="
            f"{config.data.max_instances}); instance models augment on the host: set it False"
        )
    if config.data.num_classes == 1:
        raise ConfigError(
            "data.num_classes=1 is not valid; it must be 0 (the dataset's classes) or at least 2 "
            "(a binary task is 2 classes: background and foreground)"
        )
    mean, std = normalised["data.mean"], normalised["data.std"]
    if bool(mean) != bool(std) or (mean and len(mean) != len(std)):
        raise ConfigError(
            f"data.mean={mean!r} and data.std={std!r} must both be () (ImageNet statistics) or "
            "give one value per channel each"
        )
    build_model(config, num_classes=2, in_channels=3)  # the factory checks the model options
    if config.model.arch in INSTANCE_ARCHS:
        if config.data.max_instances < 1:
            raise ConfigError(
                f"data.max_instances={config.data.max_instances}: model.arch="
                f"{config.model.arch!r} needs detection targets; set it to the most objects a "
                "training crop holds (e.g. 128)"
            )

    if config.model.pretrained and config.model.arch.endswith("_paper"):
        raise ConfigError(
            f"model.pretrained={config.model.pretrained!r} needs an encoder (ResNet, GhostNet, "
            "MobileNetV2 or EfficientNet-Lite); "
            f"model.arch={config.model.arch!r} has its own plain encoder, which no file holds"
        )
    if config.model.pretrained_kind and not config.model.pretrained:
        raise ConfigError(
            f"model.pretrained_kind={config.model.pretrained_kind!r} without model.pretrained"
        )
    weights = {name: config.loss.weights[name] for name in LOSSES}
    if not any(weights.values()):
        raise ConfigError(
            f"loss.weights select no loss (all 0); give one of {list(LOSSES)} a weight > 0"
        )
    if weights["binary_cross_entropy"]:
        raise ConfigError(
            "loss.weights.binary_cross_entropy needs a model with one output channel; segjax "
            "models have one per class (at least 2): use loss.weights.cross_entropy"
        )
    return config


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    with node.ignore_type():
        node[last] = value


def metric_names(class_names) -> list[str]:
    """The eval metrics a run logs, any of which can pick the best checkpoint."""
    per_class = [f"{m}/{name}" for m in PER_CLASS_METRICS for name in class_names]
    return [*SUMMARY_METRICS, *per_class]


def check_with_data(config: ml_collections.ConfigDict, dataset, in_channels: int):
    """What needs the dataset: splits, channels, classes, the best metric, the model options.
    Returns the model (a module definition; nothing is initialised)."""
    dataset.split("train")  # a DataError naming the split if it is missing or empty
    try:
        dataset.split(config.eval_split)
    except DataError as error:
        raise DataError(
            f"{error}, which eval_split={config.eval_split!r} evaluates on; give it examples "
            "(splits.json, data.split_fractions) or choose another eval_split"
        ) from None
    data = config.data
    if data.name != "folder" and data.channels != in_channels:
        raise ConfigError(
            f"data.channels={data.channels} but {dataset.name!r} images have {in_channels} "
            "channels (data.channels converts folder datasets only)"
        )
    if data.mean and len(data.mean) != in_channels:
        raise ConfigError(
            f"data.mean={tuple(data.mean)!r} and data.std have {len(data.mean)} values but the "
            f"images have {in_channels} channels"
        )
    class_weights = config.loss.options.cross_entropy.class_weights
    if class_weights and len(class_weights) != dataset.num_classes:
        raise ConfigError(
            f"loss.options.cross_entropy.class_weights={tuple(class_weights)!r} has "
            f"{len(class_weights)} values but the dataset has {dataset.num_classes} classes "
            f"{list(dataset.class_names)}"
        )
    instance_model = config.model.arch in INSTANCE_ARCHS
    if instance_model and not dataset.has_instances:
        raise DataError(
            f"model.arch={config.model.arch!r} trains on instance maps, and dataset "
            f"{dataset.name!r} has none (a folder dataset needs an instances/ folder)"
        )
    metrics = INSTANCE_METRICS if instance_model else metric_names(dataset.class_names)
    if config.best_metric and config.best_metric not in metrics:
        raise ConfigError(
            f"best_metric={config.best_metric!r} is not a metric this run logs; choose one of "
            f"{metrics}, or '' to keep no best checkpoint"
        )
    return build_model(config, dataset.num_classes, in_channels)


def build_model(config: ml_collections.ConfigDict, num_classes: int, in_channels: int):
    """The model definition (nothing initialised); ``create_model``'s error for a bad option
    becomes a ``ConfigError`` naming the ``model.`` key."""
    try:
        return model_from_config(config.model, num_classes, in_channels)
    except ValueError as error:
        message = str(error)
        keyed = message.split("=")[0] in set(model_defaults()) | {"arch", "encoder"}
        raise ConfigError(f"model.{message}" if keyed else f"model: {message}") from None
