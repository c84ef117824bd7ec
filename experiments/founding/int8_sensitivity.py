"""Where a member's int8 accuracy goes: its test nucleus IoU in int8 with one block of
convolutions at a time kept in float32, and with percentile calibration.

    python experiments/founding/int8_sensitivity.py runs/founding_grid/<member> [--blocks 8]

The int8 model is int8_accuracy.py's (same calibration images, same test split, same scoring);
the convolutions of the graph the quantiser sees (``segjax.quantize.prepared_graph``) are cut, in
graph order (the encoder first, the decoder last), into blocks of about 1/``--blocks`` of their
MACs each.
Each block's row says what keeping it in float32 recovers and what share of the convolutions'
MACs it holds: what a mixed-precision export would pay for the recovery.
"""

import argparse
import math
import os
import sys

from int8_accuracy import calibration_set, each_member, nucleus_iou, test_set

from segjax.export import export_onnx
from segjax.quantize import boundary_convs, prepared_graph, quantize_int8

PERCENTILE = 99.99


def conv_macs(graph) -> dict[str, int]:
    """Each Conv node's multiply-accumulates, from its weight's and its output's shapes."""
    shapes = {
        value.name: [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        for value in list(graph.graph.value_info) + list(graph.graph.output)
    }
    weights = {t.name: list(t.dims) for t in graph.graph.initializer}
    macs = {}
    for node in graph.graph.node:
        if node.op_type == "Conv":
            kernel = weights[node.input[1]]  # (out, in / groups, kh, kw)
            macs[node.name] = math.prod(shapes[node.output[0]]) * math.prod(kernel[1:])
    return macs


def blocks_of(macs: dict[str, int], count: int) -> list[list[str]]:
    """The convolutions of ``macs`` (in graph order) cut into consecutive blocks of about
    1/``count`` of their MACs each (a convolution holding more is a block alone)."""
    total, blocks, done = sum(macs.values()), [[]], 0
    for name, value in macs.items():
        if blocks[-1] and done + value / 2 > total * len(blocks) / count:
            blocks.append([])
        blocks[-1].append(name)
        done += value
    return blocks


def report(directory: str, blocks: int) -> None:
    restored, dataset, size, inputs = calibration_set(directory)
    fp32 = export_onnx(restored, size)
    tests = test_set(restored, dataset, size)
    graph = prepared_graph(fp32)
    macs = conv_macs(graph)
    total = sum(macs.values())
    boundary = set(boundary_convs(graph.graph))
    convs = [name for name in macs if name not in boundary]

    def score(**options) -> float:
        return nucleus_iou(quantize_int8(fp32, inputs, **options), tests, restored.class_names)

    reference = nucleus_iou(fp32, tests, restored.class_names)
    int8 = score()
    print(f"{os.path.basename(os.path.normpath(directory))} (step {restored.step}):", flush=True)
    print("| int8 | kept in float32 | share of conv MACs kept | test nucleus IoU | int8 - fp32 |")
    print("|---|---|---:|---:|---:|")
    print(f"| float32 | all | 100% | {reference:.4f} | |")
    print(
        f"| min/max (as graded) | boundary convolutions | {share(boundary, macs, total)} "
        f"| {int8:.4f} | {int8 - reference:+.4f} |",
        flush=True,
    )
    value = score(percentile=PERCENTILE)
    print(
        f"| percentile {PERCENTILE} | boundary convolutions | {share(boundary, macs, total)} "
        f"| {value:.4f} | {value - reference:+.4f} |",
        flush=True,
    )
    for block in blocks_of({n: macs[n] for n in convs}, blocks):
        value = score(keep_float=block)
        first, last = convs.index(block[0]) + 1, convs.index(block[-1]) + 1
        kept = f"convolution {first}" if first == last else f"convolutions {first}-{last}"
        kept += f" of {len(convs)}"
        print(
            f"| min/max | {kept} + boundary | {share(boundary | set(block), macs, total)} "
            f"| {value:.4f} | {value - reference:+.4f} |",
            flush=True,
        )


def share(names, macs: dict[str, int], total: int) -> str:
    return f"{sum(macs[n] for n in names) / total:.0%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", help="run directories with a checkpoint")
    parser.add_argument("--blocks", type=int, default=8, help="blocks of convolutions")
    args = parser.parse_args()
    return each_member(args.members, lambda directory: report(directory, args.blocks))


if __name__ == "__main__":
    sys.exit(main())
