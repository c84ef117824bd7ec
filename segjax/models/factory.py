"""Builds models by name, checking every option with an error that names it and its valid values."""

import dataclasses
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segjax.models.conv_ops import IMPLEMENTATIONS
from segjax.models.decoders.block import ATTENTIONS, DecoderBlock
from segjax.models.decoders.unet import UNetDecoder
from segjax.models.decoders.unetpp import UNetPlusPlusDecoder
from segjax.models.detection import (
    PYRAMIDS,
    DetectionSettings,
    FeaturePyramid,
    MaskRCNN,
    NestedPyramid,
    RepeatedPyramid,
)
from segjax.models.encoders.efficientnet_lite import (
    EFFICIENTNETS,
    EfficientNetLiteClassifier,
    EfficientNetLiteEncoder,
)
from segjax.models.encoders.ghostnet import GHOSTNETS, GhostNetClassifier, GhostNetEncoder
from segjax.models.encoders.mobilenet_v2 import (
    MOBILENETS,
    MobileNetV2Classifier,
    MobileNetV2Encoder,
)
from segjax.models.encoders.plain import PAPER_FILTERS, PlainEncoder
from segjax.models.encoders.resnet import RESNETS, ResNetClassifier, ResNetEncoder
from segjax.models.layers import DoubleConv, GhostDoubleConv, conv
from segjax.models.segmentation import SegmentationModel

ENCODERS = {
    **{name: (ResNetEncoder, ResNetClassifier, kwargs) for name, kwargs in RESNETS.items()},
    **{name: (GhostNetEncoder, GhostNetClassifier, kwargs) for name, kwargs in GHOSTNETS.items()},
    **{
        name: (MobileNetV2Encoder, MobileNetV2Classifier, kwargs)
        for name, kwargs in MOBILENETS.items()
    },
    **{
        name: (EfficientNetLiteEncoder, EfficientNetLiteClassifier, kwargs)
        for name, kwargs in EFFICIENTNETS.items()
    },
}
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
DECODER_BLOCKS = ("conv", "ghost")
NORMS = (None, "batch")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

_BACKBONE_OPTIONS = dict(
    encoder_depth=5,
    decoder_channels=None,
    attention=None,
    decoder_block="conv",
    dtype="float32",
    freeze_encoder_bn=False,
    conv_impl="auto",
)
_PAPER_OPTIONS = dict(
    filters=PAPER_FILTERS, dropout=0.5, norm=None, dtype="float32", conv_impl="auto"
)
_NESTED_OPTIONS = dict(deep_supervision=False, prune_level=None)
_DETECTION_OPTIONS = dict(
    pyramid="fpn",
    pyramid_channels=256,
    pyramid_repeats=4,
    dtype="float32",
    freeze_encoder_bn=False,
    conv_impl="auto",
    **dataclasses.asdict(DetectionSettings()),
)
# Each architecture's options and their defaults.
ARCHS = {
    "unet": _BACKBONE_OPTIONS,
    "unetpp": {**_BACKBONE_OPTIONS, **_NESTED_OPTIONS},
    "unet_paper": _PAPER_OPTIONS,
    "unetpp_paper": {**_PAPER_OPTIONS, **_NESTED_OPTIONS},
    "maskrcnn": _DETECTION_OPTIONS,
}
INSTANCE_ARCHS = ("maskrcnn",)


def _choice(key: str, value: Any, valid) -> Any:
    if value not in valid:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {list(valid)}")
    return value


def _int_in(key: str, value: Any, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{key}={value!r} is not valid; it must be an integer {bound}")
    return value


def _dtype(value: Any):
    name = jnp.dtype(value).name if not isinstance(value, str) else value
    return DTYPES[_choice("dtype", name, DTYPES)]


def _channels(key: str, value: Any, length: int) -> tuple[int, ...]:
    channels = tuple(value)
    if len(channels) != length or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels
    ):
        raise ValueError(f"{key}={value!r} is not valid; it must be {length} positive integers")
    return channels


def _options(arch: str, options: dict[str, Any]) -> dict[str, Any]:
    defaults = ARCHS[_choice("arch", arch, ARCHS)]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for arch {arch!r}; valid options are {sorted(defaults)}"
        )
    return {**defaults, **options}


def _prune_level(options: dict[str, Any], num_levels: int) -> int | None:
    level = options.get("prune_level")
    return None if level is None else _int_in("prune_level", level, 1, num_levels - 1)


def create_model(
    arch: str,
    encoder: str | None = None,
    num_classes: int = 1,
    in_channels: int = 3,
    **options: Any,
) -> SegmentationModel:
    """A segmentation model: ``arch`` in ``ARCHS``; ``encoder`` in ``ENCODERS`` for 'unet' and
    'unetpp' and None for the paper models, which have their own plain encoder.

    Options (defaults in ``ARCHS``): ``encoder_depth`` 3-5; ``decoder_channels`` one per decoder
    block, deepest first (default: the last ``encoder_depth`` of 256, 128, 64, 32, 16);
    ``attention`` None or 'scse'; ``decoder_block`` 'conv' or 'ghost'; ``freeze_encoder_bn``
    (the encoder's BatchNorm layers normalise with their running statistics and leave them
    unchanged in training too, as PyTorch users do with ImageNet encoders); ``dtype`` of the
    computation ('float32' or 'bfloat16'; parameters stay float32); for U-Net++
    ``deep_supervision`` and ``prune_level`` 1..depth-1; ``conv_impl`` 'auto' (depthwise and 1x1
    convolutions in the form fastest on the backend), 'lax' or 'fused' (``models/conv_ops.py``;
    same parameters and outputs either way); for the paper models ``filters``,
    ``dropout`` and ``norm`` (None or 'batch').

    'maskrcnn' is an instance segmentation model (``segjax.models.detection``) on ``encoder``:
    ``pyramid`` 'fpn', 'unetpp' or 'fpn_repeated' (``pyramid_repeats`` top-down and bottom-up
    passes, the nested pyramid's compute), ``pyramid_channels``, and the counts and thresholds of
    ``DetectionSettings``; ``num_classes`` counts the background.
    """
    options = _options(arch, options)
    num_classes = _int_in("num_classes", num_classes, 1)
    in_channels = _int_in("in_channels", in_channels, 1)
    dtype = _dtype(options["dtype"])
    conv_impl = _choice("conv_impl", options["conv_impl"], IMPLEMENTATIONS)
    if arch in INSTANCE_ARCHS:
        return _maskrcnn(encoder, num_classes, in_channels, dtype, conv_impl, options)
    build = _paper_parts if arch.endswith("_paper") else _encoder_parts
    parts = build(arch, encoder, options, dtype)
    head = partial(conv, num_classes, parts.head_kernel, use_bias=True, dtype=dtype)
    if arch.startswith("unetpp"):
        decoder = UNetPlusPlusDecoder(
            parts.decoder_channels,
            parts.block,
            head,
            parts.num_levels,
            parts.final_upsample,
            parts.deep_supervision,
            parts.prune_level,
        )
    else:
        decoder = UNetDecoder(parts.decoder_channels, parts.block, head, parts.final_upsample)
    return SegmentationModel(
        parts.encoder,
        decoder,
        in_channels,
        parts.deep_supervision,
        parts.pad_multiple,
        parts.freeze_encoder_bn,
        conv_impl,
    )


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What a U-Net family's builder decides; ``create_model`` assembles the decoder and head."""

    encoder: nn.Module
    block: Any  # the decoder block, partially applied
    decoder_channels: tuple[int, ...]
    num_levels: int
    pad_multiple: int
    final_upsample: bool
    head_kernel: int
    freeze_encoder_bn: bool
    deep_supervision: bool
    prune_level: int | None


def _paper_parts(arch: str, encoder: str | None, options: dict, dtype) -> _Parts:
    """The paper U-Net / U-Net++: their own plain encoder of ``filters``, transposed-conv
    upsampling, optional dropout and BatchNorm, a 1x1 head at full resolution."""
    if encoder is not None:
        raise ValueError(
            f"arch {arch!r} has its own plain encoder; got encoder={encoder!r}, use encoder=None"
        )
    filters = tuple(options["filters"])
    num_levels = len(_channels("filters", filters, len(filters)))
    if num_levels < 2:
        raise ValueError(f"filters={filters!r} is not valid; it needs at least 2 levels")
    dropout = float(options["dropout"])
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} is not valid; it must be in [0, 1)")
    norm = _choice("norm", options["norm"], NORMS)
    prune_level = _prune_level(options, num_levels) if arch.startswith("unetpp") else None
    depth = num_levels if prune_level is None else prune_level + 1
    unit = partial(DoubleConv, norm=norm, dropout=dropout, dtype=dtype)
    return _Parts(
        encoder=PlainEncoder(filters, depth, norm, dropout, dtype),
        block=partial(DecoderBlock, unit=unit, upsample="transpose", dtype=dtype),
        decoder_channels=filters[-2::-1],
        num_levels=num_levels,
        pad_multiple=2 ** (num_levels - 1),
        final_upsample=False,
        head_kernel=1,
        freeze_encoder_bn=False,
        deep_supervision=bool(options.get("deep_supervision", False)),
        prune_level=prune_level,
    )


def _encoder_parts(arch: str, encoder: str | None, options: dict, dtype) -> _Parts:
    """U-Net / U-Net++ on one of ``ENCODERS`` (smp's layout): ``encoder_depth`` levels,
    nearest-neighbour upsampling, conv or Ghost decoder blocks, optional scSE, a 3x3 head after
    a last upsampling to the input's size."""
    if encoder not in ENCODERS:
        raise ValueError(
            f"encoder={encoder!r} is not valid for arch {arch!r}; choose one of {list(ENCODERS)}"
        )
    num_levels = _int_in("encoder_depth", options["encoder_depth"], 3, 5)
    channels = options["decoder_channels"] or DEFAULT_DECODER_CHANNELS[-num_levels:]
    decoder_channels = _channels("decoder_channels", channels, num_levels)
    attention = _choice("attention", options["attention"], ATTENTIONS)
    decoder_block = _choice("decoder_block", options["decoder_block"], DECODER_BLOCKS)
    prune_level = _prune_level(options, num_levels) if arch.startswith("unetpp") else None
    encoder_cls, _, kwargs = ENCODERS[encoder]
    depth = num_levels if prune_level is None else prune_level + 1
    unit = (
        partial(DoubleConv, norm="batch", dtype=dtype)
        if decoder_block == "conv"
        else partial(GhostDoubleConv, dtype=dtype)
    )
    return _Parts(
        encoder=encoder_cls(**kwargs, depth=depth, dtype=dtype),
        block=partial(DecoderBlock, unit=unit, attention=attention, dtype=dtype),
        decoder_channels=decoder_channels,
        num_levels=num_levels,
        pad_multiple=2**num_levels,
        final_upsample=True,
        head_kernel=3,
        freeze_encoder_bn=bool(options["freeze_encoder_bn"]),
        deep_supervision=bool(options.get("deep_supervision", False)),
        prune_level=prune_level,
    )


def _number_in(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{key}={value!r} is not valid; it must be a number in [{low}, {high}]")
    return float(value)


def _settings(options: dict[str, Any]) -> DetectionSettings:
    """``DetectionSettings`` from the options, each checked."""
    values = {}
    for field in dataclasses.fields(DetectionSettings):
        key, value = field.name, options[field.name]
        default = field.default
        if key == "anchor_sizes":
            values[key] = tuple(_number_in(key, v, 1e-3, 1e6) for v in value)
            if len(values[key]) != 5:
                raise ValueError(
                    f"{key}={value!r} is not valid; it needs one size per level P2..P6"
                )
        elif key == "anchor_ratios":
            values[key] = tuple(_number_in(key, v, 1e-3, 1e3) for v in value)
            if not values[key]:
                raise ValueError(f"{key}={value!r} is not valid; it needs at least one ratio")
        elif key == "rpn_iou_thresholds":
            low, high = (_number_in(key, v, 0.0, 1.0) for v in value)
            if low > high:
                raise ValueError(
                    f"{key}={value!r} is not valid; it must be (low, high), low <= high"
                )
            values[key] = (low, high)
        elif key == "roi_canonical_size":
            values[key] = _number_in(key, value, 1.0, 1e6)
        elif isinstance(default, int):
            values[key] = _int_in(key, value, 1)
        else:
            values[key] = _number_in(key, value, 0.0, 1.0)
    if values["roi_positive_fraction"] <= 0 or values["rpn_positive_fraction"] <= 0:
        raise ValueError("roi_positive_fraction and rpn_positive_fraction must be above 0")
    if int(values["roi_batch_per_image"] * values["roi_positive_fraction"]) < 1:
        raise ValueError(
            f"roi_batch_per_image={values['roi_batch_per_image']} x roi_positive_fraction="
            f"{values['roi_positive_fraction']} leaves no RoI for the mask head"
        )
    return DetectionSettings(**values)


def _maskrcnn(encoder, num_classes, in_channels, dtype, conv_impl, options) -> MaskRCNN:
    if encoder not in ENCODERS:
        raise ValueError(
            f"encoder={encoder!r} is not valid for arch 'maskrcnn'; choose one of {list(ENCODERS)}"
        )
    if num_classes < 2:
        raise ValueError(
            f"num_classes={num_classes} is not valid for arch 'maskrcnn'; it counts the "
            "background too (at least 2)"
        )
    pyramid = _choice("pyramid", options["pyramid"], PYRAMIDS)
    channels = _int_in("pyramid_channels", options["pyramid_channels"], 1)
    encoder_cls, _, kwargs = ENCODERS[encoder]
    if pyramid == "fpn_repeated":
        repeats = _int_in("pyramid_repeats", options["pyramid_repeats"], 1)
        pyramid_module = RepeatedPyramid(channels, repeats, dtype=dtype)
    else:
        pyramid_cls = FeaturePyramid if pyramid == "fpn" else NestedPyramid
        pyramid_module = pyramid_cls(channels, dtype=dtype)
    return MaskRCNN(
        encoder_cls(**kwargs, depth=5, dtype=dtype),
        pyramid_module,
        num_classes,
        in_channels,
        _settings(options),
        bool(options["freeze_encoder_bn"]),
        conv_impl,
        dtype,
    )


def is_instance_model(model: nn.Module) -> bool:
    return isinstance(model, MaskRCNN)


def create_classifier(encoder: str, num_classes: int = 1000, dtype: Any = "float32") -> nn.Module:
    """The ImageNet classifier of an encoder; ``apply(variables, x, train=...)`` -> (B, classes).

    Its ``encoder`` sub-tree of parameters is the segmentation encoder's, so classifier weights
    (e.g. ported from torchvision or timm) initialise segmentation models.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder={encoder!r} is not valid; choose one of {list(ENCODERS)}")
    num_classes = _int_in("num_classes", num_classes, 1)
    dtype = _dtype(dtype)
    encoder_cls, classifier_cls, kwargs = ENCODERS[encoder]
    return classifier_cls(encoder_cls(**kwargs, dtype=dtype), num_classes, dtype=dtype)
