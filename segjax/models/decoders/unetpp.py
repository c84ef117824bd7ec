"""U-Net++ decoder (Zhou et al., DLMIA 2018 / TMI 2019): nested dense skips, deep supervision,
pruning.

Nodes are named in the paper's notation: ``x_{i}_{j}`` is level ``i`` (0 = finest encoder
feature, stride 2 for backbone encoders, 1 for the paper's plain encoder) and column ``j``, with
``x_{i}_0`` the encoder features and, for j > 0,

    x^{i,j} = H([U(x^{i+1,j-1}), x^{i,0}, ..., x^{i,j-1}]).

With ``L = len(features) - 1`` skip levels, the nodes on the diagonal ``i + j = L`` form the
U-Net path and output ``channels`` (deepest first, as in ``UNetDecoder``); the nested nodes output
the channels of their level's encoder feature. These are the channel rules of
segmentation_models.pytorch's ``UnetPlusPlus`` (which has no deep supervision and no pruning).

Head ``j`` sits on the top-row node ``x^{0,j}``; with ``final_upsample`` it is preceded by its own
block ``final_{j}`` that upsamples to full size. ``deep_supervision`` builds heads 1..k and returns
their logits shallowest first; otherwise only head k. ``prune_level=k`` keeps only the nodes with
``i + j <= k`` (UNet++ L_k), i.e. exactly the sub-network head k needs, so a pruned model's
parameters are a subset of the deep-supervised model's and can be taken from it.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import ModuleDef


class UNetPlusPlusDecoder(nn.Module):
    """``features`` hold the encoder levels 0..k (shallowest first) where k is the prune level;
    ``num_levels`` is the number of encoder levels of the unpruned model (L + 1)."""

    channels: Sequence[int]
    block: ModuleDef
    head: ModuleDef
    num_levels: int
    final_upsample: bool = True
    deep_supervision: bool = False
    prune_level: int | None = None

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], train: bool = False) -> list[jax.Array]:
        last = self.num_levels - 1
        k = last if self.prune_level is None else self.prune_level
        nodes = {(level, 0): feature for level, feature in enumerate(features[: k + 1])}
        for j in range(1, k + 1):
            for i in range(k + 1 - j):
                on_unet_path = i + j == last
                out = self.channels[last - 1 - i] if on_unet_path else nodes[(i, 0)].shape[-1]
                skips = [nodes[(i, m)] for m in range(j)]
                nodes[(i, j)] = self.block(out, name=f"x_{i}_{j}")(
                    nodes[(i + 1, j - 1)], skips, train
                )
        outputs = []
        for j in range(1, k + 1) if self.deep_supervision else (k,):
            x = nodes[(0, j)]
            if self.final_upsample:
                x = self.block(self.channels[-1], name=f"final_{j}")(x, [], train)
            outputs.append(self.head(name=f"head_{j}")(x).astype(jnp.float32))
        return outputs
