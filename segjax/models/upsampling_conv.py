"""A decoder's first convolution over its nearest-upsampled input, at the input's resolution.

A U-Net decoder block convolves ``concat(up2(x), *skips)`` with a 3x3 kernel, ``up2`` repeating
each pixel of ``x`` 2x2. Every output pixel of phase (p, q) (its row parity p, column parity q)
then reads the same 2x2 neighbourhood of ``x`` with the same weights: the 3x3 kernel's rows
fold to two (p = 0 reads rows i-1 and i with weights W0 and W1 + W2; p = 1 reads rows i and i+1
with W0 + W1 and W2), likewise its columns. So the upsampled part is four 2x2 convolutions of
``x`` itself, interleaved: 4/9 of the multiply-adds, on a quarter of the pixels, and the
upsampled tensor is never built. The skips (full resolution) keep their 3x3 convolution. The
sum is the same up to float rounding, in value and in every gradient.

On XLA:CPU this made a GhostNet U-Net's decoder convolutions about 2x faster forward and
backward (``benchmarks/README.md``, "The decoder's upsampling convolution"). It is taken where
the other rewritten convolutions are (``conv_ops``: CPU unless ``conv_impl='lax'``); elsewhere,
and in exports, the layer is exactly ``nn.Conv`` of the upsampled concatenation.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from segjax.models import conv_ops

_NHWC = ("NHWC", "HWIO", "NHWC")
_SAME = ((1, 1), (1, 1))


def upsample_nearest(x: jax.Array) -> jax.Array:
    """Exact nearest-neighbour x2 upsampling of an NHWC batch."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _conv(x, kernel, padding):
    """A stride-1 NHWC convolution, the kernel cast to the input's dtype (as ``nn.Conv``)."""
    kernel = kernel.astype(x.dtype)
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


def _fold(kernel: jax.Array, axis: int, phase: int) -> jax.Array:
    """The 3 taps of ``kernel`` along ``axis`` folded to the 2 that phase ``phase`` reads."""
    first, middle, last = (lax.index_in_dim(kernel, i, axis, keepdims=True) for i in range(3))
    pair = (first, middle + last) if phase == 0 else (first + middle, last)
    return jnp.concatenate(pair, axis=axis)


def upsampled_conv(x: jax.Array, skips: Sequence[jax.Array], kernel: jax.Array) -> jax.Array:
    """``conv3x3_same(concat(upsample_nearest(x), *skips), kernel)`` (NHWC, HWIO), the upsampled
    part computed at ``x``'s resolution as four 2x2 convolutions (see the module docstring). The
    taps are folded in the kernel's own dtype, then cast to the input's."""
    n, h, w, channels = x.shape
    up_kernel, skip_kernel = kernel[:, :, :channels], kernel[:, :, channels:]
    rows = []
    for p in (0, 1):
        row_kernel = _fold(up_kernel, 0, p)
        # Phase p reads rows (i - 1, i) for p = 0 and (i, i + 1) for p = 1.
        phases = [_conv(x, _fold(row_kernel, 1, q), ((1 - p, p), (1 - q, q))) for q in (0, 1)]
        rows.append(jnp.stack(phases, axis=3))  # (n, h, w, q, c)
    y = jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, -1)  # (n, h, p, w, q, c)
    if skips:
        y = y + _conv(jnp.concatenate(skips, axis=-1), skip_kernel, _SAME)
    return y


class UpsamplingConv(nn.Conv):
    """``nn.Conv`` (3x3, stride 1, padding 1, ungrouped) of ``concat(upsample_nearest(x),
    *skips)``, called as ``(x, skips)``: the same variables, names and initialisation, computed
    by ``upsampled_conv`` where convolutions take their fused path."""

    @nn.compact
    def __call__(self, x: jax.Array, skips: Sequence[jax.Array] = ()) -> jax.Array:
        channels = x.shape[-1] + sum(s.shape[-1] for s in skips)
        kernel = self.param(
            "kernel", self.kernel_init, (3, 3, channels, self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, *skips = promote_dtype(x, *skips, dtype=self.dtype)
        if conv_ops.resolved_implementation() == "fused":
            y = upsampled_conv(x, skips, kernel)
        else:
            y = _conv(jnp.concatenate([upsample_nearest(x), *skips], axis=-1), kernel, _SAME)
        return y if bias is None else y + bias.astype(y.dtype)
