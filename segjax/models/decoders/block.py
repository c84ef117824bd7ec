"""The decoder block shared by U-Net and U-Net++: upsample x2, concatenate skips, convolve."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import SCSE, Dtype, ModuleDef
from segjax.models.upsampling_conv import upsample_nearest

UPSAMPLE_MODES = ("nearest", "transpose")
ATTENTIONS = (None, "scse")


class DecoderBlock(nn.Module):
    """``unit([up(x), *skips])`` with optional scSE attention after the concat and after the unit.

    ``upsample='nearest'`` repeats pixels (smp); ``'transpose'`` is a 2x2 stride-2 transposed
    convolution to ``features`` channels with bias (the original U-Net / U-Net++ code).
    ``unit`` builds the convolutions from the channel count, e.g. ``partial(DoubleConv, ...)``.
    """

    features: int
    unit: ModuleDef
    upsample: str = "nearest"
    attention: str | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, skips: Sequence[jax.Array], train: bool = False) -> jax.Array:
        if self.upsample == "nearest" and self.attention is None:
            # The unit upsamples and concatenates itself, so that its first convolution can
            # skip building the upsampled tensor (layers.DoubleConv, UpsamplingConv).
            return self.unit(self.features, name="unit")(x, train, skips=list(skips))
        if self.upsample == "nearest":
            x = upsample_nearest(x)
        else:
            x = nn.ConvTranspose(
                self.features, (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype, name="up"
            )(x)
        if skips:
            x = jnp.concatenate([x, *skips], axis=-1)
            if self.attention == "scse":
                x = SCSE(dtype=self.dtype, name="attention1")(x)
        x = self.unit(self.features, name="unit")(x, train)
        if self.attention == "scse":
            x = SCSE(dtype=self.dtype, name="attention2")(x)
        return x
