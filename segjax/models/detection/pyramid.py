"""Feature pyramids over an encoder's features at strides 4, 8, 16, 32 (C2..C5), giving P2..P6
(P6 a stride-2 subsampling of P5, used by the RPN only, as in Detectron2's FPN).

Both forms start with the same lateral 1x1 convolutions to ``channels`` (x_{i,0} = lateral(C_{i+2})
for rows i = 0..3) and end with the same 3x3 output convolution per level; they differ in how the
rows are merged:

- ``FeaturePyramid`` (Lin et al., 2017): the top-down path m_3 = x_{3,0},
  m_i = x_{i,0} + up(m_{i+1}); P_{i+2} = out_i(m_i).
- ``NestedPyramid`` (Mask R-CNN++, Zhou et al., UNet++ journal paper, TMI 2019): FPN's plain
  skips replaced by U-Net++'s nested dense skips, x_{i,j} = H([up(x_{i+1,j-1}), x_{i,0}, ...,
  x_{i,j-1}]) for j = 1..3-i, H the U-Net++ node (2 x (3x3 conv, BatchNorm, ReLU)); level i
  takes the last node of its row: P2 = out_0(x_{0,3}), P3 = out_1(x_{1,2}), P4 = out_2(x_{2,1}),
  P5 = out_3(x_{3,0}). Every P_i thus sees every deeper level through the nested nodes, where
  FPN's sees them through one sum.
- ``RepeatedPyramid`` ('fpn_repeated'): FPN's sums, made as deep as the nested pyramid instead of
  as connected. ``repeats`` times a top-down pass m_3 = b_3, m_i = H(b_i + up(m_{i+1})) then a
  bottom-up pass b_0 = m_0, b_i = H(m_i + pool(b_{i-1})) (PANet's added path, repeated as
  EfficientDet's BiFPN repeats its layer; plain sums and H the same U-Net++ node, b_i = x_{i,0}
  before the first repeat); P_{i+2} = out_i(b_i). Four repeats spend the nested pyramid's
  multiply-adds within 10% at the same width, so the heads, which read ``channels`` features,
  are the same too: an FPN of equal compute that differs from the nested pyramid only in its
  skips.
"""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.decoders.block import DecoderBlock, upsample_nearest
from segjax.models.layers import DoubleConv, conv

PYRAMIDS = ("fpn", "unetpp", "fpn_repeated")
STRIDES = (4, 8, 16, 32, 64)


def _lateral_and_output(features, channels, dtype):
    laterals = [
        conv(channels, 1, use_bias=True, dtype=dtype, name=f"lateral{i}")(f)
        for i, f in enumerate(features)
    ]

    def outputs(rows):
        levels = [
            conv(channels, 3, use_bias=True, dtype=dtype, name=f"output{i}")(r)
            for i, r in enumerate(rows)
        ]
        # P6: stride-2 subsampling of P5 (a 1x1 max pool with stride 2).
        levels.append(levels[-1][:, ::2, ::2])
        return levels

    return laterals, outputs


class FeaturePyramid(nn.Module):
    """The plain FPN. ``features``: C2..C5 (B, H/4.., W/4.., C_i); returns [P2, ..., P6]."""

    channels: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool = False) -> list[jax.Array]:
        del train
        laterals, outputs = _lateral_and_output(features, self.channels, self.dtype)
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            merged.insert(0, lateral + upsample_nearest(merged[0]))
        return outputs(merged)


class NestedPyramid(nn.Module):
    """The U-Net++ nested pyramid (module docstring); nodes are named ``x_{i}_{j}``."""

    channels: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool = False) -> list[jax.Array]:
        laterals, outputs = _lateral_and_output(features, self.channels, self.dtype)
        last = len(laterals) - 1
        nodes = {(i, 0): x for i, x in enumerate(laterals)}
        unit = partial(DoubleConv, norm="batch", dtype=self.dtype)
        for j in range(1, last + 1):
            for i in range(last + 1 - j):
                skips = [nodes[(i, m)] for m in range(j)]
                nodes[(i, j)] = DecoderBlock(
                    self.channels, unit, dtype=self.dtype, name=f"x_{i}_{j}"
                )(nodes[(i + 1, j - 1)], skips, train)
        return outputs([nodes[(i, last - i)] for i in range(last + 1)])


class RepeatedPyramid(nn.Module):
    """FPN with ``repeats`` top-down + bottom-up passes of U-Net++ nodes (module docstring);
    nodes are named ``down{r}_{i}`` (top-down) and ``up{r}_{i}`` (bottom-up)."""

    channels: int = 256
    repeats: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool = False) -> list[jax.Array]:
        rows, outputs = _lateral_and_output(features, self.channels, self.dtype)
        last = len(rows) - 1

        def node(name, x):
            return DoubleConv(self.channels, norm="batch", dtype=self.dtype, name=name)(x, train)

        for r in range(self.repeats):
            merged = {last: rows[last]}
            for i in reversed(range(last)):
                merged[i] = node(f"down{r}_{i}", rows[i] + upsample_nearest(merged[i + 1]))
            rows = [merged[0]]
            for i in range(1, last + 1):
                pooled = nn.max_pool(rows[-1], window_shape=(2, 2), strides=(2, 2))
                rows.append(node(f"up{r}_{i}", merged[i] + pooled))
        return outputs(rows)
