"""Deployment speed on this CPU: one model in every runtime segjax exports to, side by side.

    python -m benchmarks.deploy [--models unet:resnet34,unet:ghostnet_100,...] \\
        [--size 256] [--batches 1,8] [--repeats 20] [--json benchmarks/results/deploy.json]

For each model (``arch:encoder``, ``:ghost`` for Ghost decoder blocks; random weights, seed 0, 2
classes, 3 channels), in this one process: JAX (the jitted forward pass on XLA:CPU, as
``segjax.predict`` runs it), onnxruntime on the ``segjax.export`` ONNX file in float32 and in int8
(``--int8``'s static QDQ quantisation, calibrated on ``--calibration`` random images: the weights
are random too, so only the speed means anything), and, with the ``bench`` extra installed, the
segmentation_models.pytorch model in PyTorch eager mode and through its own ``torch.onnx`` export
in onnxruntime. Latency at batch 1 and throughput at batch 8 (``--batches``), medians of
``--repeats`` calls after ``--warmup``; every runtime uses all the machine's cores (its default).
File sizes: the ONNX float32 and int8 files, the StableHLO file, smp's ONNX file.

``--workdirs NAME=DIR,...`` measures trained runs instead (their best checkpoint, named NAME in
the table), e.g. an experiment's members: the same figures, on the weights users deploy.
``--configs NAME=DIR,...`` measures runs' models from their records alone (``config.json`` and
``dataset.json``, randomly initialised), for runs whose checkpoints are not on this machine:
latency and file sizes do not depend on the weights' values.
"""

import json
import os
import tempfile

import jax
import numpy as np
from absl import flags

from benchmarks import smp_reference
from segjax import cli
from segjax.benchmark import time_calls
from segjax.defaults import base_config
from segjax.errors import UserError
from segjax.export import export_function, export_onnx, export_stablehlo, normalisation
from segjax.inference import Restored, restore
from segjax.models.counting import summarize
from segjax.models.random_init import random_variables
from segjax.runs import load_config
from segjax.validation import build_model
from segjax.workdir import DATASET_RECORD, read_dataset_record

DEFAULT_MODELS = [
    "unet:resnet34",
    "unet:ghostnet_100",
    "unetpp:ghostnet_100",
    "unet:ghostnet_100:ghost",
]
RUNTIMES = ("jax", "ort_fp32", "ort_int8", "smp_eager", "smp_ort")
NUM_CLASSES, CHANNELS = 2, 3


def define_flags() -> None:
    flags.DEFINE_list("models", DEFAULT_MODELS, "arch:encoder[:ghost] specs, measured in turn")
    flags.DEFINE_list("workdirs", [], "NAME=DIR: trained runs to measure instead of --models")
    flags.DEFINE_list(
        "configs", [], "NAME=DIR: runs' models from their records, randomly initialised"
    )
    flags.DEFINE_integer("size", 256, "square input size")
    flags.DEFINE_list("batches", ["1", "8"], "batch sizes (the first: latency, the rest: img/s)")
    flags.DEFINE_integer("warmup", 3, "untimed calls first")
    flags.DEFINE_integer("repeats", 20, "timed calls; the median is reported")
    flags.DEFINE_integer("calibration", 8, "random images the int8 model is calibrated on")
    flags.DEFINE_bool("smp", True, "also run segmentation_models.pytorch (bench extra)")
    flags.DEFINE_string("json", None, "write every figure to this JSON file")


def initialised(config, class_names: tuple[str, ...], channels: int) -> Restored:
    """``config``'s model with random weights (seed 0, LeCun-normal kernels as flax's init
    draws them, without compiling it; latency and file sizes do not depend on their values), as
    ``segjax.export`` takes it."""
    model = build_model(config, len(class_names), channels)
    variables = random_variables(model, (1, 64, 64, channels), seed=0, gain=1.0, train=False)
    return Restored(
        model=model,
        variables=variables,
        config=config,
        class_names=tuple(class_names),
        channels=channels,
        multiple=int(model.pad_multiple or model.encoder.strides[-1]),
        step=0,
    )


def model_of(spec: str) -> Restored:
    """The model ``spec`` names, randomly initialised."""
    arch, _, rest = spec.partition(":")
    encoder, _, decoder = rest.partition(":")
    config = base_config()
    config.model.arch, config.model.encoder = arch, encoder
    if decoder:
        config.model.decoder_block = decoder
    return initialised(config, ("background", "foreground"), CHANNELS)


def model_of_records(directory: str) -> Restored:
    """A run's model from its ``config.json`` and ``dataset.json``, randomly initialised."""
    record = read_dataset_record(directory)
    if record is None:
        raise UserError(f"--configs: {directory}/{DATASET_RECORD} not found")
    return initialised(load_config(directory), record.class_names, record.in_channels)


def timed(call, batch: int, args) -> dict:
    result = time_calls(call, args.warmup, args.repeats)
    return {**result, "images_per_s": batch / (result["median_ms"] / 1000)}


def ort_session(path: str):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def ort_timings(session, inputs: dict, args) -> dict:
    name = session.get_inputs()[0].name
    return {b: timed(lambda x=x: session.run(None, {name: x}), b, args) for b, x in inputs.items()}


def measure(spec: str, restored: Restored, args, scratch: str) -> dict:
    size, channels = (args.size, args.size), restored.channels
    batches = [int(b) for b in args.batches]
    rng = np.random.default_rng(0)
    nhwc = {b: rng.standard_normal((b, *size, channels)).astype(np.float32) for b in batches}
    summary = summarize(restored.model, (1, *size, channels))
    row = {"model": spec, "params": summary.params, "gmacs": summary.macs / 1e9, "files": {}}
    runtimes = row["runtimes"] = {}

    forward = jax.jit(export_function(restored))
    runtimes["jax"] = {
        b: timed(lambda x=x: jax.block_until_ready(forward(x)), b, args) for b, x in nhwc.items()
    }
    stablehlo = export_stablehlo(restored)
    row["files"]["stablehlo"] = len(stablehlo)

    base = os.path.join(scratch, spec.replace(":", "_"))
    fp32 = export_onnx(restored, size)
    with open(f"{base}.onnx", "wb") as file:
        file.write(fp32)
    row["files"]["onnx_fp32"] = len(fp32)
    session = ort_session(f"{base}.onnx")
    runtimes["ort_fp32"] = ort_timings(session, nhwc, args)
    reference = forward(nhwc[batches[0]])
    ort_out = session.run(None, {session.get_inputs()[0].name: nhwc[batches[0]]})[0]
    row["ort_fp32_max_abs_diff"] = float(np.abs(ort_out - reference).max())

    from segjax.quantize import calibration_inputs, quantize_int8

    mean, std = normalisation(restored)
    images = (rng.integers(0, 256, (*size, channels), np.uint8) for _ in range(args.calibration))
    int8 = quantize_int8(fp32, calibration_inputs(images, size, mean, std, count=args.calibration))
    with open(f"{base}_int8.onnx", "wb") as file:
        file.write(int8)
    row["files"]["onnx_int8"] = len(int8)
    runtimes["ort_int8"] = ort_timings(ort_session(f"{base}_int8.onnx"), nhwc, args)

    why_not = (smp_reference.available() if args.smp else "--nosmp") or smp_reference.unsupported(
        restored.config
    )
    if why_not:
        row["smp_skipped"] = why_not
        return row
    import torch

    torch.manual_seed(0)
    model = smp_reference.build(restored.config, len(restored.class_names), channels).eval()
    nchw = {b: torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for b, x in nhwc.items()}

    def eager(x):
        with torch.inference_mode():
            model(x)

    runtimes["smp_eager"] = {b: timed(lambda x=x: eager(x), b, args) for b, x in nchw.items()}
    path = f"{base}_smp.onnx"
    torch.onnx.export(
        model,
        (nchw[batches[0]],),
        path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    row["files"]["smp_onnx"] = os.path.getsize(path)
    inputs = {b: x.numpy() for b, x in nchw.items()}
    runtimes["smp_ort"] = ort_timings(ort_session(path), inputs, args)
    return row


def _ms(row: dict, runtime: str, batch: int) -> float | None:
    timing = row["runtimes"].get(runtime, {}).get(batch)
    return timing["median_ms"] if timing else None


def print_tables(rows: list[dict], args) -> None:
    latency, throughput = int(args.batches[0]), [int(b) for b in args.batches[1:]]
    present = [r for r in RUNTIMES if any(r in row["runtimes"] for row in rows)]
    header = ["model", "params", "GMACs"] + [f"{r} b{latency} ms" for r in present]
    header += [f"{r} b{b} img/s" for b in throughput for r in present]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        cells = [row["model"], f"{row['params'] / 1e6:.2f}M", f"{row['gmacs']:.2f}"]
        for runtime in present:
            ms = _ms(row, runtime, latency)
            cells.append(f"{ms:.1f}" if ms else "-")
        for b in throughput:
            for runtime in present:
                ms = _ms(row, runtime, b)
                cells.append(f"{b / ms * 1000:.1f}" if ms else "-")
        print("| " + " | ".join(cells) + " |")
    baseline = rows[0]
    print(f"\nbatch-{latency} latency / {baseline['model']}'s, per runtime (< 1: faster):\n")
    header = ["model", "MACs ratio"] + present
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows[1:]:
        cells = [row["model"], f"{row['gmacs'] / baseline['gmacs']:.2f}"]
        for runtime in present:
            ms, base = _ms(row, runtime, latency), _ms(baseline, runtime, latency)
            cells.append(f"{ms / base:.2f}" if ms and base else "-")
        print("| " + " | ".join(cells) + " |")
    print("\nfile sizes (MB):\n")
    kinds = ["onnx_fp32", "onnx_int8", "stablehlo", "smp_onnx"]
    print("| model | " + " | ".join(kinds) + " | int8 / fp32 |\n|" + "---|" * (len(kinds) + 2))
    for row in rows:
        files = row["files"]
        cells = [f"{files[k] / 1e6:.1f}" if k in files else "-" for k in kinds]
        ratio = files["onnx_int8"] / files["onnx_fp32"]
        print(f"| {row['model']} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    for row in rows:
        if "smp_skipped" in row:
            print(f"{row['model']}: smp not run: {row['smp_skipped']}")
    print(
        f"\n{os.cpu_count()} CPU cores; {args.size}x{args.size}; medians of {args.repeats} calls "
        f"after {args.warmup} warm-up; jax {jax.__version__}" + _versions()
    )


def _versions() -> str:
    found = []
    for name in ("onnxruntime", "torch", "segmentation_models_pytorch"):
        try:
            found.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return "".join(f", {v}" for v in found)


def models(args) -> list[tuple[str, object]]:
    """(name, a function that loads the model) of each model to measure."""
    if args.workdirs and args.configs:
        raise UserError("--workdirs and --configs: give one of them")
    if not args.workdirs and not args.configs:
        return [(spec, lambda spec=spec: model_of(spec)) for spec in args.models]
    flag, items, load = (
        ("--workdirs", args.workdirs, restore)
        if args.workdirs
        else ("--configs", args.configs, model_of_records)
    )
    named = []
    for item in items:
        name, sep, directory = item.partition("=")
        if not sep or not name or not os.path.isdir(directory):
            raise UserError(f"{flag} {item!r}: expected NAME=DIR with DIR a training run's workdir")
        named.append((name, lambda directory=directory: load(directory)))
    return named


def main(argv) -> int:
    cli.positional(argv)
    args = flags.FLAGS
    rows = []
    with tempfile.TemporaryDirectory(prefix="segjax-deploy-") as scratch:
        for spec, load in models(args):
            print(f"measuring {spec} ...", flush=True)
            rows.append(measure(spec, load(), args, scratch))
    print_tables(rows, args)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {"cpu_cores": os.cpu_count(), "size": args.size, "rows": rows}, file, indent=1
            )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
