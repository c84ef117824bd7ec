"""What is particular to segmentation_models.pytorch's whole models: which segjax models have an
smp equivalent, the U-Net++ concat order, and the tensors smp builds but never runs.
"""

import re

import numpy as np
from flax import traverse_util

from segjax.models.encoders.efficientnet_lite import HEAD_CHANNELS, STAGES
from segjax.models.weights import layouts

# The axis that runs over a U-Net++ node's concatenated input, in the variables that see it.
_CONCAT_AXES = {
    ("unit", "conv1", "kernel"): 2,
    ("attention1", "cse_reduce", "kernel"): 2,
    ("attention1", "cse_expand", "kernel"): 3,
    ("attention1", "cse_expand", "bias"): 0,
    ("attention1", "sse", "kernel"): 2,
}
# smp's name of each segjax encoder family that it has, and what its encoder must compute.
SMP_ENCODERS = {
    "resnet": "resnet*",
    "mobilenet_v2": "mobilenet_v2",
    "efficientnet_lite": "timm-tf_efficientnet_lite0",
}


def concat_order(flat: dict, modules: tuple[str, ...], leaf: str) -> tuple[np.ndarray | None, int]:
    """(permutation, axis) for a variable of U-Net++ node ``x_{i}_{j}`` that sees its concat
    (the unit's first conv and the scSE around the concat), else (None, 2)."""
    axis = _CONCAT_AXES.get((*modules[2:], leaf))
    if len(modules) < 2 or axis is None or not re.fullmatch(r"x_\d+_\d+", modules[1]):
        return None, 2
    node = ("params", "decoder", modules[1], "unit")
    first = flat[(*node, "conv1", "kernel")]
    skip = flat[
        ("params", "decoder", re.sub(r"_\d+$", "_1", modules[1]), "unit", "conv2", "kernel")
    ]
    return layouts.unetpp_skip_permutation(modules[1], first.shape[2], skip.shape[-1]), axis


def check_compatible(model, family: str) -> None:
    """Raises ``NoTorchEquivalent`` where smp has no model that computes what ``model`` does."""
    if family not in SMP_ENCODERS:
        raise layouts.NoTorchEquivalent(
            f"smp models are mapped on {sorted(SMP_ENCODERS)} encoders only (smp wraps GhostNet "
            "through timm's features_only, whose stride-2 feature differs); use the encoder alone"
        )
    if family == "efficientnet_lite" and model.encoder.tf_same:
        raise layouts.NoTorchEquivalent(
            "smp's timm-tf_efficientnet_lite0 pads symmetrically with BatchNorm epsilon 1e-5, "
            "which is encoder efficientnet_lite0_smp; efficientnet_lite0 (TensorFlow 'same' "
            "padding) would give other outputs there"
        )
    decoder = model.decoder
    if getattr(decoder, "deep_supervision", False) or getattr(decoder, "prune_level", None):
        raise layouts.NoTorchEquivalent("smp's UnetPlusPlus has no deep supervision or pruning")


def never_run(model, variables: dict) -> dict[str, np.ndarray]:
    """{key: value} of the tensors an smp model holds but never runs, which segjax does not
    build: ignored on import, written on export (zeros, identity BatchNorm) so that
    ``load_state_dict(strict=True)`` finds every key. They are the scSE module smp builds before
    the concat of its last block, which has no skip, and EfficientNet's ``conv_head`` / ``bn2``,
    which smp keeps after the last stage it taps."""
    tensors = _unused_attention(model, variables)
    if layouts.encoder_family(model.encoder) == "efficientnet_lite":
        channels = HEAD_CHANNELS
        tensors["encoder.conv_head.weight"] = np.zeros((channels, STAGES[-1][3], 1, 1), np.float32)
        tensors["encoder.bn2.weight"] = np.ones(channels, np.float32)
        tensors["encoder.bn2.bias"] = np.zeros(channels, np.float32)
        tensors["encoder.bn2.running_mean"] = np.zeros(channels, np.float32)
        tensors["encoder.bn2.running_var"] = np.ones(channels, np.float32)
        tensors["encoder.bn2.num_batches_tracked"] = np.array(0, np.int64)
    return tensors


def _unused_attention(model, variables: dict) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(variables)
    if not any("attention1" in path for path in flat):
        return {}
    levels = len(model.encoder.channels) - 1
    block = (
        f"block{levels}"
        if ("params", "decoder", "block0") in {p[:3] for p in flat}
        else (f"final_{levels}")
    )
    kernel = flat.get(("params", "decoder", block, "unit", "conv1", "kernel"))
    if kernel is None:
        return {}
    name = layouts.smp_module(("decoder", block, "unit", "conv1"), levels).removesuffix(".conv1.0")
    channels = kernel.shape[2]
    reduced = channels // 16  # smp's SCSEModule(in_channels, reduction=16)
    prefix = f"{name}.attention1.attention"
    shapes = {
        f"{prefix}.cSE.1.weight": (reduced, channels, 1, 1),
        f"{prefix}.cSE.1.bias": (reduced,),
        f"{prefix}.cSE.3.weight": (channels, reduced, 1, 1),
        f"{prefix}.cSE.3.bias": (channels,),
        f"{prefix}.sSE.0.weight": (1, channels, 1, 1),
        f"{prefix}.sSE.0.bias": (1,),
    }
    return {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}
