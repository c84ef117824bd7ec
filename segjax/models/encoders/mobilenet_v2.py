"""MobileNetV2 (Sandler et al., CVPR 2018) at width 1.0, as torchvision builds it.

Modules are named after torchvision's ``features`` (``features_0`` is the stem, ``features_1`` to
``features_17`` the inverted residual blocks, ``features_18`` the 1x1 convolution to 1280
channels); the skips are the outputs segmentation_models.pytorch taps: ``features`` 1, 3, 6, 13
and 18, at strides 2, 4, 8, 16 and 32 with 16, 24, 32, 96 and 1280 channels.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.encoders.mbconv import InvertedResidual
from segjax.models.layers import ConvBNAct, Dtype

# (expansion t, output channels c, repeats n, first stride s): torchvision's table.
SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
LAST_INDEX = 18
# The ``features`` index whose output is the skip at each stride 2, 4, 8, 16, 32.
FEATURE_INDICES = (1, 3, 6, 13, LAST_INDEX)
FEATURE_STRIDES = (2, 4, 8, 16, 32)


def blocks() -> list[tuple[int, int, int, int]]:
    """(features index, expansion, channels, stride) of each inverted residual block."""
    table, index = [], 1
    for expansion, channels, repeats, stride in SETTINGS:
        for repeat in range(repeats):
            table.append((index, expansion, channels, stride if repeat == 0 else 1))
            index += 1
    return table


class MobileNetV2Encoder(nn.Module):
    """Returns the skips at strides 2, 4, 8, 16, 32 (the first ``depth`` of them)."""

    depth: int = 5
    dtype: Dtype = jnp.float32

    @property
    def channels(self) -> tuple[int, ...]:
        return (16, 24, 32, 96, LAST_CHANNELS)[: self.depth]

    @property
    def strides(self) -> tuple[int, ...]:
        return FEATURE_STRIDES[: self.depth]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        x = ConvBNAct(
            STEM_CHANNELS, 3, 2, activation=jax.nn.relu6, dtype=self.dtype, name="features_0"
        )(x, train)
        last = FEATURE_INDICES[self.depth - 1]
        features = []
        for index, expansion, channels, stride in blocks():
            if index > last:
                break
            x = InvertedResidual(
                channels, expansion, 3, stride, dtype=self.dtype, name=f"features_{index}"
            )(x, train)
            if index in FEATURE_INDICES:
                features.append(x)
        if last == LAST_INDEX:
            x = ConvBNAct(
                LAST_CHANNELS, 1, activation=jax.nn.relu6, dtype=self.dtype, name="features_18"
            )(x, train)
            features.append(x)
        return features


class MobileNetV2Classifier(nn.Module):
    """ImageNet classifier: the encoder, global average pooling, dropout 0.2, linear."""

    encoder: MobileNetV2Encoder
    num_classes: int = 1000
    dropout: float = 0.2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.mean(self.encoder(x, train)[-1], axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return x.astype(jnp.float32)


MOBILENETS = {"mobilenet_v2": {}}
