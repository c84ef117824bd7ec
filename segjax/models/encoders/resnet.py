"""ResNet-18/34/50/101 in torchvision's layout (v1.5: the bottleneck strides on its 3x3 conv).

Module names follow torchvision (``conv1``, ``bn1``, ``layer2_0/conv1``,
``layer2_0/downsample_conv`` ...) so that its checkpoints map onto these parameters key by key.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import Dtype, batch_norm, conv

FEATURE_STRIDES = (2, 4, 8, 16, 32)


def stem_max_pool(x: jax.Array) -> jax.Array:
    """torchvision's stem pooling (3x3, stride 2, padding 1) of the stem's ReLU output. Its
    padding is spelt out as pixels, so that exporters that ignore a pooling's explicit padding
    see the same shapes, and as zeros rather than -inf: on inputs >= 0 the maximum is the same,
    and int8 calibration gets a finite range for the padded tensor."""
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        residual = x
        y = conv(self.features, 3, self.strides, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
        y = conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
        y = batch_norm(train, self.dtype, name="bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            residual = conv(
                self.features, 1, self.strides, dtype=self.dtype, name="downsample_conv"
            )(x)
            residual = batch_norm(train, self.dtype, name="downsample_bn")(residual)
        return nn.relu(y + residual)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet-50/101)."""

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_features = self.features * self.expansion
        residual = x
        y = conv(self.features, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
        y = conv(self.features, 3, self.strides, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(batch_norm(train, self.dtype, name="bn2")(y))
        y = conv(out_features, 1, dtype=self.dtype, name="conv3")(y)
        y = batch_norm(train, self.dtype, name="bn3")(y)
        if self.strides != 1 or x.shape[-1] != out_features:
            residual = conv(
                out_features, 1, self.strides, dtype=self.dtype, name="downsample_conv"
            )(x)
            residual = batch_norm(train, self.dtype, name="downsample_bn")(residual)
        return nn.relu(y + residual)


class ResNetEncoder(nn.Module):
    """Returns the feature maps at strides 2, 4, 8, 16, 32 (the first ``depth`` of them).

    Stride 2 is the stem (7x7/2 conv, BN, ReLU); strides 4..32 are the outputs of layer1..layer4.
    """

    stage_sizes: Sequence[int]
    block: type[BasicBlock] | type[Bottleneck]
    depth: int = 5
    dtype: Dtype = jnp.float32

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each returned feature map, shallowest first."""
        e = self.block.expansion
        return (64, 64 * e, 128 * e, 256 * e, 512 * e)[: self.depth]

    @property
    def strides(self) -> tuple[int, ...]:
        return FEATURE_STRIDES[: self.depth]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        x = conv(64, 7, 2, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(batch_norm(train, self.dtype, name="bn1")(x))
        features = [x]
        for stage, num_blocks in enumerate(self.stage_sizes[: self.depth - 1]):
            if stage == 0:
                x = stem_max_pool(x)
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                x = self.block(
                    64 * 2**stage, strides, self.dtype, name=f"layer{stage + 1}_{index}"
                )(x, train)
            features.append(x)
        return features


class ResNetClassifier(nn.Module):
    """ImageNet classifier: the encoder, global average pooling and a linear layer (``fc``)."""

    encoder: ResNetEncoder
    num_classes: int = 1000
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.encoder(x, train)[-1]
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
        return x.astype(jnp.float32)


RESNETS = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block=BasicBlock),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block=Bottleneck),
    "resnet101": dict(stage_sizes=(3, 4, 23, 3), block=Bottleneck),
}
