"""U-Net decoder (Ronneberger et al., 2015), in the form of segmentation_models.pytorch."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import ModuleDef


class UNetDecoder(nn.Module):
    """From the deepest feature up, one ``block`` per skip: ``block{l}`` takes the previous output
    and the encoder feature one stride finer, and outputs ``channels[l]``.

    ``features`` come shallowest first, as encoders return them. With ``final_upsample`` (encoders
    whose finest feature is at stride 2) a last block without skip brings the output to full size.
    ``block`` and ``head`` are module factories (``DecoderBlock`` and a convolution to the classes).
    Returns a one-element list of logits, like the deep-supervised U-Net++ returns several.
    """

    channels: Sequence[int]
    block: ModuleDef
    head: ModuleDef
    final_upsample: bool = True

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], train: bool = False) -> list[jax.Array]:
        *skips, x = features
        for level, skip in enumerate(reversed(skips)):
            x = self.block(self.channels[level], name=f"block{level}")(x, [skip], train)
        if self.final_upsample:
            x = self.block(self.channels[-1], name=f"block{len(skips)}")(x, [], train)
        return [self.head(name="head")(x).astype(jnp.float32)]
