"""An encoder-decoder segmentation model that accepts any input size.

Any size: the input is zero-padded at the bottom and right up to a multiple of the encoder's
deepest stride (32 for a depth-5 backbone), so every decoder level is exactly twice the size of the
next, and the logits are cropped back to the input's size. Zero is the dataset mean after
normalisation, and cropping keeps every output pixel aligned with its input pixel. Sizes that are
already multiples are untouched, so ported weights behave exactly as in their original framework.
A pruned U-Net++ pads to the multiple of the unpruned model (``pad_multiple``), so that it computes
exactly the deep-supervised model's k-th output at every input size, borders included.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.conv_ops import conv_implementation


class SegmentationModel(nn.Module):
    """``apply(variables, x, train=...)``: (B, H, W, in_channels) -> logits (B, H, W, classes),
    or a list of them (shallowest head first) when the decoder is deep-supervised."""

    encoder: nn.Module
    decoder: nn.Module
    in_channels: int
    deep_supervision: bool = False
    pad_multiple: int | None = None  # default: the encoder's deepest stride
    freeze_encoder_bn: bool = False  # the encoder's BatchNorm uses running statistics always
    conv_impl: str = "auto"  # how convolutions are computed: see segjax.models.conv_ops

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | list[jax.Array]:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (batch, height, width, {self.in_channels}) (NHWC with "
                f"in_channels={self.in_channels}), got {tuple(x.shape)}"
            )
        height, width = x.shape[1:3]
        multiple = self.pad_multiple or self.encoder.strides[-1]
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        with conv_implementation(self.conv_impl):
            features = self.encoder(x, train and not self.freeze_encoder_bn)
            outputs = self.decoder(features, train)
        outputs = [logits[:, :height, :width] for logits in outputs]
        return outputs if self.deep_supervision else outputs[0]
