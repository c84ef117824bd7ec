"""Building blocks shared by encoders and decoders.

Convolutions use explicit, symmetric PyTorch-style padding (``kernel // 2`` on each side) rather
than 'SAME', so that weights ported from torchvision or timm give the same outputs. BatchNorm uses
PyTorch's defaults (momentum 0.1, i.e. Flax momentum 0.9; epsilon 1e-5) and keeps its running
statistics in the ``batch_stats`` collection.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import conv_ops
from segjax.models.batch_norm import FusedBatchNorm
from segjax.models.upsampling_conv import UpsamplingConv, upsample_nearest

Dtype = Any
ModuleDef = Callable[..., nn.Module]
Padding = tuple[tuple[int, int], tuple[int, int]]


def make_divisible(value: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Rounds a channel count to a multiple of ``divisor`` without losing more than 10%.

    The rule used by MobileNet, GhostNet and timm (``_make_divisible``).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6, the gate of GhostNet's squeeze-and-excitation."""
    return jax.nn.relu6(x + 3.0) / 6.0


# He (Kaiming) normal initialisation over the fan-out, as torchvision's ResNets initialise.
KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(
    features: int,
    kernel_size: int,
    strides: int = 1,
    groups: int = 1,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    padding: Padding | None = None,
) -> nn.Conv:
    """A 2-D convolution padded like PyTorch's ``Conv2d(padding=kernel_size // 2)``, or by
    ``padding`` ((top, bottom), (left, right)) when given; depthwise and 1x1 ones take the
    backend's fast path (``conv_ops``), with the same parameters."""
    if padding is None:
        pad = kernel_size // 2
        padding = ((pad, pad), (pad, pad))
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=padding,
        feature_group_count=groups,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=KERNEL_INIT,
        conv_general_dilated=conv_ops.conv_general_dilated,
        name=name,
    )


def tf_same_padding(size: tuple[int, int], kernel_size: int, strides: int) -> Padding:
    """TensorFlow's 'SAME' padding of an input of ``size`` (height, width): the output has
    ceil(size / strides) pixels and the padding's odd pixel goes to the bottom and right (for a
    stride-2 3x3 convolution of an even size: none at the top and left, one at the bottom and
    right). timm's ``tf_*`` models pad so, to give the outputs of TensorFlow-trained weights."""
    pads = []
    for length in size:
        total = max((-(-length // strides) - 1) * strides + kernel_size - length, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def batch_norm(
    train: bool, dtype: Dtype = jnp.float32, name: str | None = None, epsilon: float = 1e-5
) -> nn.BatchNorm:
    """BatchNorm with PyTorch's momentum and epsilon (TensorFlow-trained weights use 1e-3);
    batch statistics while training, summed as matrix products where convolutions take their
    fused path (``batch_norm.FusedBatchNorm``; the same variables and arithmetic)."""
    kind = FusedBatchNorm if conv_ops.resolved_implementation() == "fused" else nn.BatchNorm
    return kind(
        use_running_average=not train, momentum=0.9, epsilon=epsilon, dtype=dtype, name=name
    )


class ConvBNAct(nn.Module):
    """Convolution (no bias), BatchNorm, optional activation (ReLU by default, ``relu6`` in
    MobileNetV2 and EfficientNet-Lite, None for a linear projection). ``tf_same`` pads as
    TensorFlow does (``tf_same_padding``) and ``epsilon`` is the BatchNorm's."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    groups: int = 1
    dtype: Dtype = jnp.float32
    activation: Callable[[jax.Array], jax.Array] | None = nn.relu
    epsilon: float = 1e-5
    tf_same: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        padding = (
            tf_same_padding(x.shape[1:3], self.kernel_size, self.strides) if self.tf_same else None
        )
        x = conv(
            self.features,
            self.kernel_size,
            self.strides,
            self.groups,
            dtype=self.dtype,
            name="conv",
            padding=padding,
        )(x)
        x = batch_norm(train, self.dtype, name="bn", epsilon=self.epsilon)(x)
        return x if self.activation is None else self.activation(x)


class SqueezeExcite(nn.Module):
    """GhostNet's squeeze-and-excitation: pool, 1x1 reduce, ReLU, 1x1 expand, hard-sigmoid gate."""

    reduced_features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = conv(self.reduced_features, 1, use_bias=True, dtype=self.dtype, name="conv_reduce")(s)
        s = nn.relu(s)
        s = conv(x.shape[-1], 1, use_bias=True, dtype=self.dtype, name="conv_expand")(s)
        return x * hard_sigmoid(s)


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation (Roy et al., 2018), as in smp."""

    reduction: int = 16
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        c = jnp.mean(x, axis=(1, 2), keepdims=True)
        c = nn.relu(
            conv(
                max(channels // self.reduction, 1),
                1,
                use_bias=True,
                dtype=self.dtype,
                name="cse_reduce",
            )(c)
        )
        c = nn.sigmoid(conv(channels, 1, use_bias=True, dtype=self.dtype, name="cse_expand")(c))
        s = nn.sigmoid(conv(1, 1, use_bias=True, dtype=self.dtype, name="sse")(x))
        return x * c + x * s


class GhostModule(nn.Module):
    """Ghost module (Han et al., CVPR 2020).

    A primary convolution makes ``ceil(features / ratio)`` intrinsic maps; a cheap depthwise
    convolution makes the "ghost" maps from them; both are concatenated and sliced to ``features``.
    """

    features: int
    kernel_size: int = 1
    ratio: int = 2
    dw_size: int = 3
    relu: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        init_features = math.ceil(self.features / self.ratio)
        new_features = init_features * (self.ratio - 1)
        x1 = conv(init_features, self.kernel_size, dtype=self.dtype, name="primary_conv")(x)
        x1 = batch_norm(train, self.dtype, name="primary_bn")(x1)
        x1 = nn.relu(x1) if self.relu else x1
        x2 = conv(
            new_features, self.dw_size, groups=init_features, dtype=self.dtype, name="cheap_conv"
        )(x1)
        x2 = batch_norm(train, self.dtype, name="cheap_bn")(x2)
        x2 = nn.relu(x2) if self.relu else x2
        return jnp.concatenate([x1, x2], axis=-1)[..., : self.features]


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by [BatchNorm], ReLU and [dropout].

    With ``norm='batch'`` and no dropout this is the U-Net decoder block of smp; with ``norm=None``
    and dropout 0.5 it is the ``standard_unit`` of the original U-Net++ code. Convolutions carry a
    bias only when there is no BatchNorm after them.
    """

    features: int
    norm: str | None = "batch"
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, skips: Sequence[jax.Array] | None = None
    ) -> jax.Array:
        """With ``skips``, the input is ``concat(upsample_nearest(x), *skips)``, which the first
        convolution takes without building it where convolutions are fused
        (``UpsamplingConv``: the same variables)."""
        for index in (1, 2):
            if index == 1 and skips is not None:
                x = UpsamplingConv(
                    self.features,
                    (3, 3),
                    padding=((1, 1), (1, 1)),
                    use_bias=self.norm is None,
                    dtype=self.dtype,
                    kernel_init=KERNEL_INIT,
                    name="conv1",
                )(x, skips)
            else:
                x = conv(
                    self.features,
                    3,
                    use_bias=self.norm is None,
                    dtype=self.dtype,
                    name=f"conv{index}",
                )(x)
            if self.norm == "batch":
                x = batch_norm(train, self.dtype, name=f"bn{index}")(x)
            x = nn.relu(x)
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class GhostDoubleConv(nn.Module):
    """``DoubleConv`` with each 3x3 convolution replaced by a Ghost module whose primary
    convolution is 3x3 (as in the paper's Ghost-VGG): about half the parameters and MACs."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, skips: Sequence[jax.Array] | None = None
    ) -> jax.Array:
        """``skips`` as in ``DoubleConv``."""
        if skips is not None:
            x = jnp.concatenate([upsample_nearest(x), *skips], axis=-1)
        for index in (1, 2):
            x = GhostModule(
                self.features, kernel_size=3, relu=True, dtype=self.dtype, name=f"ghost{index}"
            )(x, train)
        return x
