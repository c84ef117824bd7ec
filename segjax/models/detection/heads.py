"""The RPN head and the RoI heads of Mask R-CNN (Detectron2's ``StandardRPNHead``,
``FastRCNNConvFCHead`` with two FC layers, and ``MaskRCNNConvUpsampleHead``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import conv

_small = nn.initializers.normal(0.01)
_tiny = nn.initializers.normal(0.001)


class RPNHead(nn.Module):
    """A shared 3x3 conv + ReLU, then per location ``num_anchors`` objectness logits and
    4 * ``num_anchors`` deltas, on every level; flattened in anchor order (level, y, x, anchor)."""

    num_anchors: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels) -> tuple[jax.Array, jax.Array]:
        channels = levels[0].shape[-1]
        shared = nn.Conv(
            channels, (3, 3), padding=1, kernel_init=_small, dtype=self.dtype, name="conv"
        )
        objectness = nn.Conv(
            self.num_anchors, (1, 1), kernel_init=_small, dtype=self.dtype, name="objectness"
        )
        deltas = nn.Conv(
            4 * self.num_anchors, (1, 1), kernel_init=_small, dtype=self.dtype, name="deltas"
        )
        logits, boxes = [], []
        for level in levels:
            x = nn.relu(shared(level))
            batch = x.shape[0]
            logits.append(objectness(x).reshape(batch, -1))
            boxes.append(deltas(x).reshape(batch, -1, 4))
        return (
            jnp.concatenate(logits, axis=1).astype(jnp.float32),
            jnp.concatenate(boxes, axis=1).astype(jnp.float32),
        )


class BoxHead(nn.Module):
    """RoI features (R, 7, 7, C) -> two FC + ReLU -> class logits (R, K + 1) (background first)
    and class-specific deltas (R, K, 4)."""

    num_classes: int  # including background
    hidden: int = 1024
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x) -> tuple[jax.Array, jax.Array]:
        x = x.reshape(x.shape[0], -1)
        for index in (1, 2):
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=f"fc{index}")(x))
        logits = nn.Dense(self.num_classes, kernel_init=_small, dtype=self.dtype, name="cls")(x)
        foreground = self.num_classes - 1
        deltas = nn.Dense(4 * foreground, kernel_init=_tiny, dtype=self.dtype, name="deltas")(x)
        return logits.astype(jnp.float32), deltas.reshape(-1, foreground, 4).astype(jnp.float32)


class MaskHead(nn.Module):
    """RoI features (R, 14, 14, C) -> ``convs`` x (3x3 conv + ReLU) -> 2x2 stride-2 transposed
    conv + ReLU -> 1x1 conv: mask logits (R, 28, 28, K), one per foreground class."""

    num_classes: int  # including background
    channels: int = 256
    convs: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x) -> jax.Array:
        for index in range(self.convs):
            x = nn.relu(
                conv(self.channels, 3, use_bias=True, dtype=self.dtype, name=f"conv{index + 1}")(x)
            )
        x = nn.ConvTranspose(
            self.channels,
            (2, 2),
            strides=(2, 2),
            padding="VALID",
            dtype=self.dtype,
            name="upsample",
        )(x)
        x = nn.relu(x)
        logits = nn.Conv(
            self.num_classes - 1, (1, 1), kernel_init=_tiny, dtype=self.dtype, name="logits"
        )(x)
        return logits.astype(jnp.float32)
