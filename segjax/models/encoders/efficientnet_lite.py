"""EfficientNet-Lite0 (Tan and Le, 2019; the Lite variants of the TensorFlow TPU repository):
EfficientNet-B0 without squeeze-excitation, with ReLU6, and with the stem and head fixed at 32 and
1280 channels, as timm's ``tf_efficientnet_lite0`` builds it.

``tf_same=True`` (encoder ``efficientnet_lite0``) computes as TensorFlow did when the ImageNet
weights were trained: 'SAME' padding (a stride-2 convolution of an even size pads only the bottom
and right) and BatchNorm epsilon 1e-3. ``tf_same=False`` (``efficientnet_lite0_smp``) pads
symmetrically like PyTorch with epsilon 1e-5, as timm's ``efficientnet_lite0`` and
segmentation_models.pytorch's ``timm-tf_efficientnet_lite0`` encoder compute it: the same
parameters, slightly different outputs. Modules are named after timm (``blocks_{stage}_{index}``);
the skips are the ones segmentation_models.pytorch taps: the stem, then stages 1, 2, 4 and 6, at
strides 2..32 with 32, 24, 40, 112 and 320 channels.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.encoders.mbconv import InvertedResidual
from segjax.models.layers import ConvBNAct, Dtype

# (kernel, first stride, expansion, output channels, repeats) of each stage: timm's arch_def
# ds_r1_k3_s1_e1_c16, ir_r2_k3_s2_e6_c24, ir_r2_k5_s2_e6_c40, ir_r3_k3_s2_e6_c80,
# ir_r3_k5_s1_e6_c112, ir_r4_k5_s2_e6_c192, ir_r1_k3_s1_e6_c320.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# The stage whose output is the skip at strides 4, 8, 16, 32 (stride 2 is the stem).
FEATURE_STAGES = (1, 2, 4, 6)
FEATURE_STRIDES = (2, 4, 8, 16, 32)


def epsilon(tf_same: bool) -> float:
    return 1e-3 if tf_same else 1e-5


class EfficientNetLiteEncoder(nn.Module):
    """Returns the skips at strides 2, 4, 8, 16, 32 (the first ``depth`` of them)."""

    tf_same: bool = True
    depth: int = 5
    dtype: Dtype = jnp.float32

    @property
    def channels(self) -> tuple[int, ...]:
        return (STEM_CHANNELS, *(STAGES[s][3] for s in FEATURE_STAGES))[: self.depth]

    @property
    def strides(self) -> tuple[int, ...]:
        return FEATURE_STRIDES[: self.depth]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        eps = epsilon(self.tf_same)
        x = ConvBNAct(
            STEM_CHANNELS,
            3,
            2,
            activation=jax.nn.relu6,
            epsilon=eps,
            tf_same=self.tf_same,
            dtype=self.dtype,
            name="stem",
        )(x, train)
        features = [x]
        stages = STAGES[: FEATURE_STAGES[self.depth - 2] + 1] if self.depth > 1 else ()
        for stage, (kernel, stride, expansion, channels, repeats) in enumerate(stages):
            for index in range(repeats):
                x = InvertedResidual(
                    channels,
                    expansion,
                    kernel,
                    stride if index == 0 else 1,
                    tf_same=self.tf_same,
                    epsilon=eps,
                    dtype=self.dtype,
                    name=f"blocks_{stage}_{index}",
                )(x, train)
            if stage in FEATURE_STAGES:
                features.append(x)
        return features


class EfficientNetLiteClassifier(nn.Module):
    """ImageNet classifier: the encoder, a 1x1 conv-BN-ReLU6 to 1280 (``head``), global average
    pooling, dropout 0.2, linear."""

    encoder: EfficientNetLiteEncoder
    num_classes: int = 1000
    dropout: float = 0.2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.encoder(x, train)[-1]
        x = ConvBNAct(
            HEAD_CHANNELS,
            1,
            activation=jax.nn.relu6,
            epsilon=epsilon(self.encoder.tf_same),
            dtype=self.dtype,
            name="head",
        )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return x.astype(jnp.float32)


EFFICIENTNETS = {
    "efficientnet_lite0": dict(tf_same=True),
    "efficientnet_lite0_smp": dict(tf_same=False),
}
