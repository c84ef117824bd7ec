"""Convolutions written the way each backend runs them fastest; same parameters, same outputs.

XLA:CPU runs two kinds of convolution far slower than their arithmetic suggests (measured in
benchmarks/README.md, "Convolution paths"): depthwise convolutions (``feature_group_count`` equal
to the input channels), forward and above all backward, go to a generic Eigen kernel; and with
XLA's YNNPACK fusions on (XLA's default; segjax turns them off, ``segjax/xla_flags.py``) 1x1
convolutions are slower than the matrix product they are (neutral with them off). So on CPU:

- a depthwise convolution is a sum of ``kh * kw`` shifted, strided slices of the padded input,
  each times one tap of the kernel: elementwise work that XLA fuses into one loop. Its gradient
  (``jax.custom_vjp``) is again a shifted sum for the input and one multiply-reduce per tap for
  the kernel (one variadic reduce for all taps), instead of what autodiff would build.
- a 1x1 convolution is a ``dot_general`` over the channel axis (after a strided slice if strided).

Everything else (dense 3x3 and 7x7 convolutions, where XLA:CPU's own kernel beats im2col) is
``lax.conv_general_dilated``, as on GPU and TPU, where cuDNN and the TPU compiler handle every
convolution well. The choice is made when the model is traced: ``conv_implementation(name)``
sets it for the code inside (``SegmentationModel`` does so from its ``conv_impl`` option), and
``conv_general_dilated`` below, which ``layers.conv`` hands to ``flax.linen.Conv``, reads it.
Kernels keep their HWIO layout and names, so checkpoints and imported weights are unaffected.
"""

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = ("auto", "lax", "fused")
# Backends on which "auto" rewrites depthwise and 1x1 convolutions (measured faster there).
FUSED_BACKENDS = ("cpu",)

_implementation = contextvars.ContextVar("segjax_conv_implementation", default="auto")


@contextlib.contextmanager
def conv_implementation(name: str) -> Iterator[None]:
    """Within the block, convolutions are traced as ``name``: 'lax' (``lax.conv_general_dilated``
    always), 'fused' (depthwise and 1x1 convolutions rewritten on every backend) or 'auto'
    ('fused' on the backends in ``FUSED_BACKENDS``, 'lax' elsewhere). It is read while tracing:
    a function that JAX has already traced keeps the choice it was traced with, so pick it per
    model (``create_model(conv_impl=...)``), not around calls of one jitted function."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"conv_impl={name!r} is not valid; choose one of {list(IMPLEMENTATIONS)}")
    token = _implementation.set(name)
    try:
        yield
    finally:
        _implementation.reset(token)


def resolved_implementation() -> str:
    """'lax' or 'fused': what convolutions traced now use."""
    name = _implementation.get()
    if name == "auto":
        return "fused" if jax.default_backend() in FUSED_BACKENDS else "lax"
    return name


def _pair(value: int | Sequence[int] | None) -> tuple[int, int]:
    if value is None:
        return 1, 1
    return (value, value) if isinstance(value, int) else tuple(value)


def _is_nhwc_hwio(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    lhs, rhs, out = dimension_numbers
    return tuple(lhs) == (0, 3, 1, 2) and tuple(rhs) == (3, 2, 0, 1) and tuple(out) == (0, 3, 1, 2)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """``lax.conv_general_dilated`` with depthwise and 1x1 NHWC convolutions routed to their
    fused forms when the current implementation is 'fused' (see the module docstring)."""
    rewritable = (
        resolved_implementation() == "fused"
        and not kwargs
        and lhs.ndim == 4
        and _is_nhwc_hwio(dimension_numbers)
        and _pair(lhs_dilation) == (1, 1)
        and not isinstance(padding, str)
    )
    if rewritable:
        strides, dilation = _pair(window_strides), _pair(rhs_dilation)
        padding = tuple(tuple(p) for p in padding)
        channels = lhs.shape[-1]
        kh, kw, per_group, _ = rhs.shape
        if feature_group_count == channels and per_group == 1 and channels > 1:
            return depthwise_conv(lhs, rhs, strides, padding, dilation)
        if (kh, kw) == (1, 1) and feature_group_count == 1 and padding == ((0, 0), (0, 0)):
            return pointwise_conv(lhs, rhs, strides)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )


def pointwise_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int] = (1, 1)):
    """A 1x1 convolution (NHWC input, (1, 1, in, out) kernel) as one matrix product."""
    if strides != (1, 1):
        x = x[:, :: strides[0], :: strides[1]]
    return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))


def _accumulator(dtype) -> jnp.dtype:
    """Sums run in float32 at least (bfloat16 and float16 inputs), as lax's convolutions do."""
    return jnp.promote_types(dtype, jnp.float32)


def _out_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    return (size - (kernel - 1) * dilation - 1) // stride + 1


def _windows(padded, kernel_hw, strides, dilation, out_hw):
    """For each tap (i, j) in row order: padded[:, i*dh :: sh, j*dw :: sw][:, :out_h, :out_w]."""
    (sh, sw), (dh, dw), (oh, ow) = strides, dilation, out_hw
    n, _, _, c = padded.shape
    for i in range(kernel_hw[0]):
        for j in range(kernel_hw[1]):
            yield lax.slice(
                padded,
                (0, i * dh, j * dw, 0),
                (n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1, c),
                (1, sh, sw, 1),
            )


def _shifted_sum(padded, kernel, strides, dilation, out_hw):
    """The sum over taps of each window (``_windows``) times its kernel tap, accumulated in
    float32 or wider."""
    accumulator = _accumulator(padded.dtype)
    taps = kernel.reshape(-1, kernel.shape[-1]).astype(accumulator)
    windows = _windows(padded, kernel.shape[:2], strides, dilation, out_hw)
    return sum(window.astype(accumulator) * tap for window, tap in zip(windows, taps, strict=True))


def depthwise_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int] = (1, 1),
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
    dilation: tuple[int, int] = (1, 1),
) -> jax.Array:
    """A depthwise convolution (NHWC input with C channels, (kh, kw, 1, C * m) kernel: output
    channel ``c * m + k`` sees input channel ``c``, as in lax) as a sum of shifted slices."""
    multiplier = kernel.shape[-1] // x.shape[-1]
    if multiplier > 1:
        x = jnp.repeat(x, multiplier, axis=-1)
    return _depthwise(x, kernel[:, :, 0], strides, padding, dilation)


def _forward(x, kernel, strides, padding, dilation):
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    kh, kw = kernel.shape[:2]
    out_hw = (
        _out_size(padded.shape[1], kh, strides[0], dilation[0]),
        _out_size(padded.shape[2], kw, strides[1], dilation[1]),
    )
    return _shifted_sum(padded, kernel, strides, dilation, out_hw).astype(x.dtype)


def _depthwise(x, kernel, strides, padding, dilation):
    return _make_depthwise(strides, padding, dilation)(x, kernel)


@functools.cache
def _make_depthwise(strides, padding, dilation):
    """A ``custom_vjp`` depthwise convolution for one static (strides, padding, dilation)."""

    @jax.custom_vjp
    def depthwise(x, kernel):
        return _forward(x, kernel, strides, padding, dilation)

    def forward(x, kernel):
        return depthwise(x, kernel), (x, kernel)

    def backward(residuals, grad):
        x, kernel = residuals
        return _input_grad(grad, kernel, x.shape, strides, padding, dilation), _kernel_grad(
            x, grad, kernel.shape, strides, padding, dilation
        )

    depthwise.defvjp(forward, backward)
    return depthwise


def _input_grad(grad, kernel, x_shape, strides, padding, dilation):
    """d(loss)/dx: the output gradient spread back over the input, i.e. a stride-1 depthwise
    correlation of the (stride-dilated) output gradient with the flipped kernel."""
    (sh, sw), (dh, dw) = strides, dilation
    kh, kw = kernel.shape[:2]
    _, h, w, _ = x_shape
    # Place grad on the padded input's grid (every stride-th position), pad so that every tap of
    # the flipped kernel reads inside it, then take the shifted sum and crop the padding off.
    dilated = lax.pad(
        grad,
        jnp.zeros((), grad.dtype),
        ((0, 0, 0), (0, 0, sh - 1), (0, 0, sw - 1), (0, 0, 0)),
    )
    padded_h, padded_w = h + sum(padding[0]), w + sum(padding[1])
    reach_h, reach_w = (kh - 1) * dh, (kw - 1) * dw
    extra_h = padded_h - reach_h - dilated.shape[1]
    extra_w = padded_w - reach_w - dilated.shape[2]
    spread = jnp.pad(
        dilated, ((0, 0), (reach_h, reach_h + extra_h), (reach_w, reach_w + extra_w), (0, 0))
    )
    flipped = kernel[::-1, ::-1]
    full = _shifted_sum(spread, flipped, (1, 1), dilation, (padded_h, padded_w))
    top, left = padding[0][0], padding[1][0]
    return full[:, top : top + h, left : left + w].astype(grad.dtype)


def _add_pairwise(totals, values):
    return [t + v for t, v in zip(totals, values, strict=True)]


def _kernel_grad(x, grad, kernel_shape, strides, padding, dilation):
    """d(loss)/dkernel: for each tap, the sum over batch and positions of input window times
    output gradient. One variadic reduce over the width computes every tap in one pass (nine
    separate reductions were several times slower on XLA:CPU); the short rows it sums
    sequentially keep float32 error at the level of a pairwise sum, which the remaining small
    sums use."""
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    accumulator = _accumulator(grad.dtype)
    grad_acc = grad.astype(accumulator)
    windows = _windows(padded, kernel_shape[:2], strides, dilation, grad.shape[1:3])
    products = [window.astype(accumulator) * grad_acc for window in windows]
    zeros = [jnp.zeros((), accumulator)] * len(products)
    rows = lax.reduce(products, zeros, _add_pairwise, (2,))
    taps = jnp.stack([jnp.sum(row, axis=(0, 1)) for row in rows])
    return taps.reshape(kernel_shape).astype(grad.dtype)
