"""segjax.onnx_compat: each lowering it adds to jax2onnx 0.13, converted from a small program and
run by onnxruntime, gives what jax gives (the whole Mask R-CNN is checked the same way in
tests/test_maskrcnn.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import pytest

from segjax.detection.nms import nms
from segjax.onnx_compat import traced_to_onnx


def _onnx_outputs(fn, example):
    proto = traced_to_onnx(fn, example, "x", ["y0", "y1"][: len(jax.eval_shape(fn, example))])
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": example})


def _stack_and_tile(x):  # jax 0.10's stack and tile primitives, under vmap
    rows = jax.vmap(lambda row: jnp.stack([row, 2 * row], axis=-1))(x)
    return rows, jnp.tile(x, (2, 3))


def _max_pool(x):  # an NHWC window over H and W only, padded: ResNet's stem pool
    return (nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),)


_upsample = nn.ConvTranspose(4, (2, 2), strides=(2, 2), padding="VALID")
_upsample_weights = _upsample.init(jax.random.key(0), jnp.zeros((1, 7, 7, 3)))


def _transpose_conv(x):  # Mask R-CNN's mask-head upsampling: 7x7 -> 14x14
    return (_upsample.apply(_upsample_weights, x),)


def _batched_nms(boxes):  # the greedy loop under vmap: an ONNX Loop over the boxes
    scores = jnp.linspace(1.0, 0.1, boxes.shape[1])[::-1]
    return jax.vmap(lambda b: nms(b, scores, scores > 0.2, 0.5, boxes.shape[1]))(boxes)


def _boxes(rng):
    corner = rng.uniform(0, 40, (2, 48, 2))
    return np.concatenate([corner, corner + rng.uniform(4, 16, (2, 48, 2))], -1).astype("f4")


@pytest.mark.parametrize(
    "fn, example",
    [
        (_stack_and_tile, lambda rng: rng.normal(size=(3, 5)).astype("f4")),
        (_max_pool, lambda rng: rng.normal(size=(2, 9, 9, 3)).astype("f4")),
        (_transpose_conv, lambda rng: rng.normal(size=(2, 7, 7, 3)).astype("f4")),
        (_batched_nms, _boxes),
    ],
    ids=["stack_tile", "nhwc_max_pool", "transpose_conv", "nms_loop"],
)
def test_added_lowerings_run_in_onnxruntime_as_in_jax(fn, example):
    x = example(np.random.default_rng(0))
    expected = jax.jit(fn)(x)
    got = _onnx_outputs(fn, x)
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        want = np.asarray(want)
        assert have.shape == want.shape and have.dtype == want.dtype
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)
    if fn is _batched_nms:  # the loop kept some of the 42 valid boxes and suppressed others
        kept = np.asarray(expected[1]).sum(axis=1)
        assert np.all((kept > 0) & (kept < 42)), kept
