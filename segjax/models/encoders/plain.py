"""The encoder of the original U-Net / U-Net++ papers: a ``DoubleConv`` per level, 2x2 max pooling
between levels. Unlike the backbone encoders its first feature map is at full resolution."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import DoubleConv, Dtype

PAPER_FILTERS = (32, 64, 128, 256, 512)


class PlainEncoder(nn.Module):
    """Returns the feature maps at strides 1, 2, 4, 8, 16 (the first ``depth`` of them)."""

    filters: Sequence[int] = PAPER_FILTERS
    depth: int = 5
    norm: str | None = None
    dropout: float = 0.5
    dtype: Dtype = jnp.float32

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.filters[: self.depth])

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(2**level for level in range(self.depth))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        features = []
        for level, filters in enumerate(self.filters[: self.depth]):
            if level > 0:  # window_shape by keyword, the form jax2onnx's max_pool patch takes
                x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
            x = DoubleConv(filters, self.norm, self.dropout, self.dtype, name=f"conv{level}")(
                x, train
            )
            features.append(x)
        return features
