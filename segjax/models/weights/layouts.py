"""How PyTorch names the tensors of the models segjax ports: a segjax variable path -> the
state-dict key holding the same tensor.

- ``torchvision``: ``torchvision.models.resnet18/34/50/101`` (timm's ``resnet*.tv_in1k``,
  ``.tv2_in1k`` and ``.a1_in1k`` files use the same keys);
- ``timm``: timm's ``ghostnet_050/100/130``;
- ``smp``: segmentation_models.pytorch 0.6 ``Unet`` / ``UnetPlusPlus`` on a ResNet encoder
  (``encoder.`` + torchvision's keys without ``fc``, ``decoder.blocks...``,
  ``segmentation_head.0``).

segjax's modules were named after these (``layer2_0/downsample_conv`` is ``layer2.0.downsample.0``)
so each rule is a rename of path parts. The one difference that is more than a name: smp's U-Net++
concatenates a nested node's skips newest first, [up, x_{i,j-1}, ..., x_{i,0}], segjax oldest first,
[up, x_{i,0}, ..., x_{i,j-1}]; ``unetpp_skip_permutation`` reorders that kernel's input channels.
"""

import re

import numpy as np

LAYOUTS = ("torchvision", "timm", "smp")
# segjax leaf name -> PyTorch parameter / buffer name (Conv, Dense and BatchNorm).
LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
# Classifier-head modules of each family: left out when only an encoder is filled.
HEAD_PREFIXES = {"resnet": ("fc.",), "ghostnet": ("blocks.9.", "conv_head.", "classifier.")}

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
# The classifier modules outside the encoder.
_RESNET_HEAD = {("fc",): "fc"}
_GHOST_HEAD = {
    ("conv_final", "conv"): "blocks.9.0.conv",
    ("conv_final", "bn"): "blocks.9.0.bn1",
    ("conv_head",): "conv_head",
    ("classifier",): "classifier",
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


class NoTorchEquivalent(ValueError):
    """A segjax module that the PyTorch layout has no tensor for."""


def encoder_module(family: str, parts: tuple[str, ...]) -> str:
    """The PyTorch module name of an encoder module path (``('layer1_0', 'conv1')``)."""
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


def classifier_module(family: str, parts: tuple[str, ...]) -> str:
    """The module name of a path of ``create_classifier``'s variables."""
    if parts[0] == "encoder":
        return encoder_module(family, parts[1:])
    head = _RESNET_HEAD if family == "resnet" else _GHOST_HEAD
    if tuple(parts) not in head:
        raise NoTorchEquivalent("/".join(parts))
    return head[tuple(parts)]


def smp_module(parts: tuple[str, ...], num_skip_levels: int) -> str:
    """The smp module name of a path of a U-Net / U-Net++ ``SegmentationModel``'s variables.

    U-Net: ``decoder/block{l}`` is ``decoder.blocks.{l}``. U-Net++: segjax node ``x_{i}_{j}``
    (level i, column j) is smp's ``x_{d}_{l}`` with l = L-1-i, d = l-j+1 (L skip levels), and
    ``final_{L}`` is ``x_0_{L}``."""
    if parts[0] == "encoder":
        return "encoder." + encoder_module("resnet", parts[1:])
    if parts[0] != "decoder":
        raise NoTorchEquivalent("/".join(parts))
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
        raise NoTorchEquivalent("/".join(parts))
    if rest in _SMP_UNIT:
        return f"{name}.{_SMP_UNIT[rest]}"
    if len(rest) == 2 and rest[0] in ("attention1", "attention2") and rest[1] in _SMP_ATTENTION:
        return f"{name}.{rest[0]}.{_SMP_ATTENTION[rest[1]]}"
    raise NoTorchEquivalent("/".join(parts))


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


def detect(keys) -> str | None:
    """The layout a state dict's keys are in (``LAYOUTS``), or None."""
    keys = set(keys)
    if any(k.startswith("decoder.") for k in keys) and "encoder.conv1.weight" in keys:
        return "smp"
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "torchvision"
    if "conv_stem.weight" in keys and "blocks.0.0.ghost1.primary_conv.0.weight" in keys:
        return "timm"
    return None


def describe_file(tensors: dict[str, np.ndarray]) -> str:
    """What a state dict holds, from its keys and shapes: 'torchvision resnet50' etc."""
    layout = detect(tensors)
    prefix = "encoder." if layout == "smp" else ""
    if layout in ("torchvision", "smp"):
        blocks = [
            len(
                {
                    k.split(".")[len(prefix) and 2 or 1]
                    for k in tensors
                    if k.startswith(f"{prefix}layer{s}.")
                }
            )
            for s in (1, 2, 3, 4)
        ]
        bottleneck = f"{prefix}layer1.0.conv3.weight" in tensors
        sizes = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 50 if bottleneck else 34, (3, 4, 23, 3): 101}
        depth = sizes.get(tuple(blocks))
        encoder = f"resnet{depth}" if depth else f"a ResNet with {blocks} blocks"
        if layout == "torchvision":
            return f"torchvision {encoder}"
        arch = "UnetPlusPlus" if any(".x_0_0." in k for k in tensors) else "Unet"
        return f"smp {arch} on {encoder}"
    if layout == "timm":
        stem = tensors["conv_stem.weight"].shape[0]
        width = {8: "050", 16: "100", 20: "130"}.get(stem)
        return f"timm ghostnet_{width}" if width else f"a timm GhostNet with a {stem}-channel stem"
    return "no known layout (torchvision ResNet, timm GhostNet, smp Unet/UnetPlusPlus)"
