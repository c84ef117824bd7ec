"""Every encoder: feature strides and channels at each depth, any number of input channels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.models import ENCODERS
from segjax.models.encoders.plain import PlainEncoder
from segjax.models.layers import conv, make_divisible

EXPECTED_CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "resnet101": (64, 256, 512, 1024, 2048),
    "ghostnet_050": (8, 12, 20, 56, 80),
    "ghostnet_100": (16, 24, 40, 112, 160),
    "ghostnet_130": (20, 32, 52, 144, 208),
    # smp's taps: torchvision features 1, 3, 6, 13, 18; timm's stem and stages 1, 2, 4, 6.
    "mobilenet_v2": (16, 24, 32, 96, 1280),
    "efficientnet_lite0": (32, 24, 40, 112, 320),
    "efficientnet_lite0_smp": (32, 24, 40, 112, 320),
}


def build_encoder(name, depth):
    encoder_cls, _, kwargs = ENCODERS[name]
    return encoder_cls(**kwargs, depth=depth)


def feature_shapes(encoder, input_shape):
    variables = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros(input_shape)))
    return [
        f.shape
        for f in jax.eval_shape(lambda v: encoder.apply(v, jnp.zeros(input_shape)), variables)
    ]


def test_every_encoder_is_covered():
    assert set(EXPECTED_CHANNELS) == set(ENCODERS)


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("depth", [3, 4, 5])
def test_feature_strides_and_channels(name, depth):
    encoder = build_encoder(name, depth)
    shapes = feature_shapes(encoder, (2, 64, 96, 3))
    expected_channels = EXPECTED_CHANNELS[name][:depth]
    assert encoder.channels == expected_channels
    assert encoder.strides == (2, 4, 8, 16, 32)[:depth]
    assert shapes == [
        (2, 64 // s, 96 // s, c) for s, c in zip(encoder.strides, expected_channels, strict=True)
    ]


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("in_channels", [1, 4])
def test_any_number_of_input_channels(name, in_channels):
    shapes = feature_shapes(build_encoder(name, 5), (1, 64, 64, in_channels))
    assert shapes[-1] == (1, 2, 2, EXPECTED_CHANNELS[name][-1])


def test_plain_encoder_keeps_full_resolution_first():
    encoder = PlainEncoder(filters=(8, 16, 32), depth=3)
    assert feature_shapes(encoder, (1, 32, 32, 1)) == [
        (1, 32, 32, 8),
        (1, 16, 16, 16),
        (1, 8, 8, 32),
    ]
    assert encoder.strides == (1, 2, 4)


def test_make_divisible_matches_ghostnet_rounding():
    assert [make_divisible(c * 0.5, 4) for c in (16, 24, 40, 112, 160, 960)] == [
        8,
        12,
        20,
        56,
        80,
        480,
    ]
    assert [make_divisible(c * 1.3, 4) for c in (16, 24, 40, 112, 160)] == [20, 32, 52, 144, 208]
    assert make_divisible(3, 4) == 4  # never below the divisor


def test_convolution_padding_is_symmetric_like_pytorch():
    """A 7x7 stride-2 conv on an even input: PyTorch pads 3 on each side, so the first output
    sees input rows 0..3. 'SAME' would pad (2, 3) and make it see rows 0..4."""
    layer = conv(1, 7, 2)
    x = jnp.zeros((1, 16, 16, 1))
    variables = {"params": {"kernel": jnp.ones((7, 7, 1, 1))}}
    grad = jax.grad(lambda x: layer.apply(variables, x)[0, 0, 0, 0])(x)
    rows = np.nonzero(np.asarray(grad[0, :, 0, 0]))[0]
    assert rows.tolist() == [0, 1, 2, 3]
    assert layer.apply(variables, x).shape == (1, 8, 8, 1)


@pytest.mark.parametrize("size", [7, 8, 9, 32, 33, 224])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (5, 2), (1, 1)])
def test_tf_same_padding_is_tensorflows(size, kernel, stride):
    """As lax's 'SAME' (TensorFlow's rule): ceil(size / stride) outputs, the odd pixel of padding
    at the bottom and right."""
    from jax import lax

    from segjax.models.layers import tf_same_padding

    expected = lax.padtype_to_pads((size, size + 1), (kernel, kernel), (stride, stride), "SAME")
    assert tf_same_padding((size, size + 1), kernel, stride) == tuple(map(tuple, expected))


def test_efficientnet_flavours_differ_only_in_padding_and_epsilon():
    """efficientnet_lite0 (TensorFlow 'same', eps 1e-3) and efficientnet_lite0_smp (PyTorch's
    symmetric padding, eps 1e-5): the same parameters, different outputs on the same weights
    (the first stages, where both differences already act)."""
    tf, smp = build_encoder("efficientnet_lite0", 2), build_encoder("efficientnet_lite0_smp", 2)
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    variables = jax.jit(tf.init)(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, jax.eval_shape(lambda: smp.init(jax.random.key(1), x))
    )
    outputs = [jax.jit(m.apply)(variables, x) for m in (tf, smp)]
    for a, b in zip(*outputs, strict=True):
        assert a.shape == b.shape
        assert np.abs(a - b).max() > 0.01 * np.abs(a).max()
