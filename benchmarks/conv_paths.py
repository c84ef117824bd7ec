"""The convolutions segjax rewrites (segjax/models/conv_ops.py), timed on both paths.

    python -m benchmarks.conv_paths [--repeats 10] [--json out.json]

For each shape, in this one process: ``lax.conv_general_dilated`` against the fused form, forward
alone and forward + backward (the gradient of sum(sin(y)) with respect to input and kernel), each
jitted, medians of ``--repeats`` calls after two warm-up calls; and the largest difference from
lax relative to lax's largest value (forward, input gradient, kernel gradient).
"""

import jax
import jax.numpy as jnp
from absl import flags
from jax import lax

from benchmarks.speed import write_rows
from segjax import cli
from segjax.benchmark import time_calls
from segjax.models import conv_ops

# (name, input NHWC, kernel size, stride, output channels or None for depthwise): GhostNet-1.0's
# depthwise and 1x1 convolutions at batch 8, 128x128 input, and a ResNet 1x1 downsample.
SHAPES = [
    ("depthwise 3x3, 240 ch", (8, 32, 32, 240), 3, 1, None),
    ("depthwise 3x3 stride 2, 240 ch", (8, 32, 32, 240), 3, 2, None),
    ("depthwise 5x5 stride 2, 72 ch", (8, 64, 64, 72), 5, 2, None),
    ("depthwise 5x5, 960 ch", (8, 8, 8, 960), 5, 1, None),
    ("1x1, 240 -> 40", (8, 32, 32, 240), 1, 1, 40),
    ("1x1, 40 -> 120", (8, 32, 32, 40), 1, 1, 120),
    ("1x1 stride 2, 64 -> 128", (8, 64, 64, 64), 1, 2, 128),
]


def define_flags() -> None:
    flags.DEFINE_integer("repeats", 10, "timed calls; the median is reported")
    flags.DEFINE_string("json", None, "write every figure to this JSON file")


def convolutions(shape, kernel_size, stride, out_channels):
    channels = shape[-1]
    depthwise = out_channels is None
    kernel_shape = (kernel_size, kernel_size, 1 if depthwise else channels)
    kernel_shape += (channels if depthwise else out_channels,)
    pad = kernel_size // 2
    padding = ((pad, pad), (pad, pad))
    numbers = lax.conv_dimension_numbers(shape, kernel_shape, ("NHWC", "HWIO", "NHWC"))

    def standard(x, k):
        return lax.conv_general_dilated(
            x,
            k,
            (stride, stride),
            padding,
            dimension_numbers=numbers,
            feature_group_count=channels if depthwise else 1,
        )

    def fused(x, k):
        if depthwise:
            return conv_ops.depthwise_conv(x, k, (stride, stride), padding)
        return conv_ops.pointwise_conv(x, k, (stride, stride))

    return kernel_shape, standard, fused


def measure(shape, kernel_size, stride, out_channels, repeats) -> dict:
    kernel_shape, standard, fused = convolutions(shape, kernel_size, stride, out_channels)
    keys = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(keys[0], shape)
    kernel = jax.random.normal(keys[1], kernel_shape)
    row = {}
    results = {}
    for name, conv in (("lax", standard), ("fused", fused)):
        forward = jax.jit(conv)
        backward = jax.jit(jax.grad(lambda a, b, f=conv: jnp.sum(jnp.sin(f(a, b))), (0, 1)))
        results[name] = (forward(x, kernel), *backward(x, kernel))
        row[f"{name}_forward_ms"] = time_calls(
            lambda f=forward: jax.block_until_ready(f(x, kernel)), 2, repeats
        )["median_ms"]
        row[f"{name}_backward_ms"] = time_calls(
            lambda f=backward: jax.block_until_ready(f(x, kernel)), 2, repeats
        )["median_ms"]
    row["relative_difference"] = max(
        float(jnp.abs(a - b).max() / jnp.abs(a).max())
        for a, b in zip(results["lax"], results["fused"], strict=True)
    )
    return row


def main(argv) -> int:
    cli.positional(argv)
    args = flags.FLAGS
    rows = []
    print(
        "| convolution | input | lax fwd ms | fused fwd ms | fwd speed-up | lax fwd+bwd ms | "
        "fused fwd+bwd ms | fwd+bwd speed-up | max rel. diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, shape, kernel_size, stride, out_channels in SHAPES:
        row = {"name": name, "input": list(shape)}
        row.update(measure(shape, kernel_size, stride, out_channels, args.repeats))
        rows.append(row)
        forward = row["lax_forward_ms"] / row["fused_forward_ms"]
        backward = row["lax_backward_ms"] / row["fused_backward_ms"]
        cells = [name, "x".join(map(str, shape)), f"{row['lax_forward_ms']:.1f}"]
        cells += [f"{row['fused_forward_ms']:.1f}", f"{forward:.1f}x"]
        cells += [f"{row['lax_backward_ms']:.1f}", f"{row['fused_backward_ms']:.1f}"]
        cells += [f"{backward:.1f}x", f"{row['relative_difference']:.1e}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n{jax.devices()[0].device_kind}; medians of {args.repeats} calls after 2 warm-up")
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
