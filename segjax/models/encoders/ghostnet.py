"""GhostNet (Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020).

The block table, channel rounding and module names follow the official implementation (and timm's
``ghostnet_050/100/130``): nine groups of Ghost bottlenecks, named ``blocks_{group}_{index}``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import (
    ConvBNAct,
    Dtype,
    GhostModule,
    SqueezeExcite,
    batch_norm,
    conv,
    make_divisible,
)

# (kernel, expansion channels, output channels, SE ratio, stride), grouped as in the official code.
GHOSTNET_BLOCKS = (
    ((3, 16, 16, 0.0, 1),),
    ((3, 48, 24, 0.0, 2),),
    ((3, 72, 24, 0.0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0.0, 2),),
    (
        (3, 200, 80, 0.0, 1),
        (3, 184, 80, 0.0, 1),
        (3, 184, 80, 0.0, 1),
        (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1),
    ),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1)),
)
# The group after which each stride (2, 4, 8, 16, 32) ends: the skip features are taken there.
FEATURE_GROUPS = (0, 2, 4, 6, 8)
FEATURE_STRIDES = (2, 4, 8, 16, 32)
STEM_CHANNELS = 16
FINAL_CHANNELS = 960
HEAD_CHANNELS = 1280


class GhostBottleneck(nn.Module):
    """Ghost module (expand, ReLU), [strided depthwise conv + BN], [SE], Ghost module (project)."""

    mid_features: int
    features: int
    kernel_size: int = 3
    strides: int = 1
    se_ratio: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        in_features = x.shape[-1]
        y = GhostModule(self.mid_features, relu=True, dtype=self.dtype, name="ghost1")(x, train)
        if self.strides > 1:
            y = conv(
                self.mid_features,
                self.kernel_size,
                self.strides,
                groups=self.mid_features,
                dtype=self.dtype,
                name="conv_dw",
            )(y)
            y = batch_norm(train, self.dtype, name="bn_dw")(y)
        if self.se_ratio > 0:
            reduced = make_divisible(self.mid_features * self.se_ratio, 4)
            y = SqueezeExcite(reduced, self.dtype, name="se")(y)
        y = GhostModule(self.features, relu=False, dtype=self.dtype, name="ghost2")(y, train)
        if in_features == self.features and self.strides == 1:
            return y + x
        shortcut = conv(
            in_features,
            self.kernel_size,
            self.strides,
            groups=in_features,
            dtype=self.dtype,
            name="shortcut_dw",
        )(x)
        shortcut = batch_norm(train, self.dtype, name="shortcut_dw_bn")(shortcut)
        shortcut = conv(self.features, 1, dtype=self.dtype, name="shortcut_pw")(shortcut)
        shortcut = batch_norm(train, self.dtype, name="shortcut_pw_bn")(shortcut)
        return y + shortcut


class GhostNetEncoder(nn.Module):
    """Returns the output of the last block at each stride 2, 4, 8, 16, 32 (the first ``depth``).

    At width 1.0 these have 16, 24, 40, 112 and 160 channels.
    """

    width: float = 1.0
    depth: int = 5
    dtype: Dtype = jnp.float32

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(
            make_divisible(GHOSTNET_BLOCKS[g][-1][2] * self.width, 4) for g in FEATURE_GROUPS
        )[: self.depth]

    @property
    def strides(self) -> tuple[int, ...]:
        return FEATURE_STRIDES[: self.depth]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        stem = make_divisible(STEM_CHANNELS * self.width, 4)
        x = conv(stem, 3, 2, dtype=self.dtype, name="conv_stem")(x)
        x = nn.relu(batch_norm(train, self.dtype, name="bn1")(x))
        features = []
        for group, blocks in enumerate(GHOSTNET_BLOCKS[: FEATURE_GROUPS[self.depth - 1] + 1]):
            for index, (kernel, expansion, out, se_ratio, strides) in enumerate(blocks):
                x = GhostBottleneck(
                    mid_features=make_divisible(expansion * self.width, 4),
                    features=make_divisible(out * self.width, 4),
                    kernel_size=kernel,
                    strides=strides,
                    se_ratio=se_ratio,
                    dtype=self.dtype,
                    name=f"blocks_{group}_{index}",
                )(x, train)
            if group in FEATURE_GROUPS:
                features.append(x)
        return features


class GhostNetClassifier(nn.Module):
    """ImageNet classifier: 1x1 conv to 960 (x width), pool, 1x1 conv to 1280 with bias, ReLU,
    dropout 0.2, linear."""

    encoder: GhostNetEncoder
    num_classes: int = 1000
    dropout: float = 0.2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.encoder(x, train)[-1]
        final = make_divisible(FINAL_CHANNELS * self.encoder.width, 4)
        x = ConvBNAct(final, 1, dtype=self.dtype, name="conv_final")(x, train)
        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        x = conv(HEAD_CHANNELS, 1, use_bias=True, dtype=self.dtype, name="conv_head")(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return x.astype(jnp.float32)


GHOSTNETS = {
    "ghostnet_050": dict(width=0.5),
    "ghostnet_100": dict(width=1.0),
    "ghostnet_130": dict(width=1.3),
}
