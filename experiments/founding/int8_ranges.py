"""Why a member loses accuracy in int8: the activation ranges its per-tensor uint8 scales see.

    python experiments/founding/int8_ranges.py runs/founding_grid/<member> [...]

For each member (a run directory with a checkpoint), on the calibration images int8_accuracy.py
uses: how well its int8 model's classes match float32's there (``segjax.quantize.agreement``,
what ``segjax.export --int8`` checks), then for every tensor of the exported float32 graph after
onnxruntime's pre-processing (BatchNorm folded into the convolutions, as the quantiser sees it):

- outliers: the largest range (max - min) over the tensor's 99.9th percentile of |x|; a large
  ratio means min/max calibration leaves most values one or two levels;
- channel spread: for each convolution's output, the share of channels whose |max| stays below
  1/16 of the tensor's (those get at most 16 of the 256 levels of a shared scale); the mean over
  convolutions, and the worst ones.
"""

import argparse
import os
import sys

import numpy as np
from int8_accuracy import calibration_set, each_member

from segjax.export import export_onnx
from segjax.quantize import agreement, prepared_graph, quantize_int8

SMALL = 1 / 16  # a channel below this share of its tensor's |max| gets at most 16 levels


def intermediate_outputs(model: bytes, inputs: list[np.ndarray]):
    """(names, op types, per-input outputs) of every node output of the pre-processed graph."""
    import onnx
    import onnxruntime

    graph = prepared_graph(model)
    ops = {out: node.op_type for node in graph.graph.node for out in node.output}
    names = list(ops)
    del graph.graph.output[:]
    graph.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    session = onnxruntime.InferenceSession(
        graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feed = session.get_inputs()[0].name
    return names, ops, [session.run(names, {feed: x}) for x in inputs]


def report(directory: str, worst: int) -> None:
    restored, _, size, inputs = calibration_set(directory)
    fp32 = export_onnx(restored, size)
    matched = agreement(fp32, quantize_int8(fp32, inputs), inputs)
    names, ops, outputs = intermediate_outputs(fp32, inputs)
    ratios, spreads = [], []
    for i, name in enumerate(names):
        values = np.concatenate([out[i] for out in outputs], axis=0)
        if values.size < 100:
            continue
        flat = values.astype(np.float64).ravel()
        percentile = max(np.percentile(np.abs(flat), 99.9), 1e-9)
        ratios.append(((flat.max() - flat.min()) / percentile, ops[name], name))
        if ops[name] == "Conv" and values.ndim == 4:
            channels = np.abs(values).max(axis=(0, 2, 3))
            top = max(channels.max(), 1e-9)
            spreads.append(((channels < SMALL * top).mean(), np.median(channels) / top, name))
    ratios.sort(reverse=True)
    spreads.sort(reverse=True)
    print(f"{os.path.basename(os.path.normpath(directory))}: {len(inputs)} calibration images")
    print(f"  int8 (min/max) classes against float32's there: mean IoU {matched:.4f}")
    print(f"  outliers: largest range / 99.9th percentile of |x|: {ratios[0][0]:.1f}")
    for ratio, op, name in ratios[:worst]:
        print(f"    {ratio:7.1f}  {op:10s} {name}")
    share = np.mean([s for s, _, _ in spreads])
    print(
        f"  channel spread: on average {share:.1%} of a convolution's output channels stay below "
        f"1/{round(1 / SMALL)} of its |max| ({len(spreads)} convolutions)"
    )
    for small, median, name in spreads[:worst]:
        print(f"    {small:6.1%} below, median channel {median:.3f} of |max|  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", help="run directories with a checkpoint")
    parser.add_argument("--worst", type=int, default=5, help="tensors listed per measure")
    args = parser.parse_args()
    return each_member(args.members, lambda directory: report(directory, args.worst))


if __name__ == "__main__":
    sys.exit(main())
