"""The inverted residual block (MBConv) shared by MobileNetV2 and EfficientNet-Lite.

1x1 expansion to ``expansion`` x the input channels (left out when ``expansion`` is 1: then it is
a depthwise-separable block), a depthwise k x k convolution carrying the stride, a linear 1x1
projection; BatchNorm after each and ReLU6 after the first two; a residual connection when the
stride is 1 and the channels do not change. The depthwise convolution goes through
``layers.conv`` and so through ``conv_ops`` like every other.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.layers import ConvBNAct, Dtype


class InvertedResidual(nn.Module):
    """Modules ``expand`` (absent when ``expansion`` is 1), ``dw`` and ``project``, each a
    ``ConvBNAct`` (conv, bn); ``layouts.py`` maps them to torchvision's and timm's names."""

    features: int
    expansion: int
    kernel_size: int = 3
    strides: int = 1
    tf_same: bool = False  # TensorFlow's 'SAME' padding (timm's tf_* models)
    epsilon: float = 1e-5  # BatchNorm's
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        in_features = x.shape[-1]
        hidden = in_features * self.expansion
        layer = functools.partial(
            ConvBNAct,
            activation=jax.nn.relu6,
            epsilon=self.epsilon,
            tf_same=self.tf_same,
            dtype=self.dtype,
        )
        y = x
        if self.expansion != 1:
            y = layer(hidden, 1, name="expand")(y, train)
        y = layer(hidden, self.kernel_size, self.strides, groups=hidden, name="dw")(y, train)
        y = layer(self.features, 1, activation=None, name="project")(y, train)
        if self.strides == 1 and in_features == self.features:
            return x + y
        return y
