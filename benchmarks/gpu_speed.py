"""Training and inference throughput on an accelerator, segjax beside segmentation_models.pytorch,
and how close each comes to the hardware's limit (MFU).

    python -m benchmarks.gpu_speed \\
        --models unet:resnet34,unet:ghostnet_100,unet:mobilenet_v2,unetpp:resnet34 \\
        --json benchmarks/results/gpu_speed_h100.json

Implementations (``--impls``): ``segjax_fp32`` and ``segjax_bf16`` (``model.dtype``; parameters
and the loss stay float32), ``segjax_fp32_fused`` / ``segjax_bf16_fused`` (``model.conv_impl``
'fused': depthwise and 1x1 convolutions rewritten as on CPU, to choose per backend), and smp as
its users run it: ``smp_eager`` (float32; TF32 where PyTorch allows it by default, in cuDNN's
convolutions), ``smp_amp`` (bfloat16 autocast, channels_last) and ``smp_compile``
(``torch.compile`` of the AMP model). Training is the whole step (forward, cross-entropy + Dice,
backward, gradient clipping, AdamW) on a fixed batch already on the device; inference is a
forward pass in eval mode. Every (model, implementation) runs in a fresh process of its own, one
after another, so no two share the device; each times ``--repeats`` calls of ``--steps`` steps
dispatched back to back (after ``--warmup`` calls; the first compiles), and reports the median
per step.

Columns: images/s, ms per step, compile seconds (segjax: XLA's ahead-of-time compilation; smp:
the first call less a timed one: torch.compile's compilation and cuDNN's autotuning), memory
(segjax: XLA's account of the executable, i.e. arguments, outputs and temporaries; smp: PyTorch's
peak allocation over the calls) and MFU: the model's FLOPs per image (training 3 x 2 x MACs,
inference 2 x MACs; segjax's MACs from ``segjax.models.counting``, smp's from PyTorch's flop
counter, as smp's GhostNet is a smaller network) times images/s over the device's peak dense
bfloat16 rate (``PEAK_BF16_TFLOPS``, by device name, or ``--peak_tflops``). Ratios are images/s
of segjax over smp's: bfloat16 against AMP and compile, float32 against eager.

``--deadline_s`` stops starting new processes once that many seconds have passed (what was
measured is kept); the JSON is rewritten after every process, so a run cut short keeps its rows.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

from segjax import cli
from segjax.errors import RunError, UserError

IMPLS = (
    "segjax_fp32",
    "segjax_bf16",
    "smp_eager",
    "smp_amp",
    "smp_compile",
    "segjax_fp32_fused",
    "segjax_bf16_fused",
)
DEFAULT_IMPLS = IMPLS[:5]
# Peak dense bfloat16 rates (TFLOP/s) from the vendors' datasheets, matched by substring of the
# device name in this order (the most specific first).
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("TPU v6", 918.0),
    ("TPU v5p", 459.0),
    ("TPU v5", 197.0),  # v5e ("TPU v5 lite")
    ("TPU v4", 275.0),
)
# Which smp implementation each segjax one is compared with.
COMPARED = {
    "segjax_bf16": ("smp_amp", "smp_compile"),
    "segjax_fp32": ("smp_eager",),
    "segjax_bf16_fused": ("smp_amp", "smp_compile"),
    "segjax_fp32_fused": ("smp_eager",),
}


def define_flags() -> None:
    flags.DEFINE_string(
        "config", "configs/resnet_unet.py", "the config whose training setup every model takes"
    )
    flags.DEFINE_list(
        "models",
        ["unet:resnet34", "unet:ghostnet_100", "unet:mobilenet_v2", "unetpp:resnet34"],
        "arch:encoder pairs",
    )
    flags.DEFINE_list("impls", list(DEFAULT_IMPLS), f"implementations, of {list(IMPLS)}")
    flags.DEFINE_integer("size", 256, "square image size")
    flags.DEFINE_list("train_batches", ["32", "128"], "training batch sizes")
    flags.DEFINE_list("infer_batches", ["1", "64"], "inference batch sizes")
    flags.DEFINE_integer("num_classes", 2, "output classes")
    flags.DEFINE_integer("warmup", 2, "untimed calls first (the first compiles)")
    flags.DEFINE_integer("repeats", 10, "timed calls; the median is reported")
    flags.DEFINE_integer("steps", 10, "steps per call, dispatched back to back, then waited for")
    flags.DEFINE_float("peak_tflops", 0.0, "the device's peak dense bf16 TFLOP/s (0: by its name)")
    flags.DEFINE_float("deadline_s", 0.0, "start no process after this many seconds (0: none)")
    flags.DEFINE_string("json", None, "write every row to this JSON file")
    flags.DEFINE_string("child", None, "internal: measure one MODEL/IMPL in this process")
    flags.DEFINE_string("child_out", None, "internal: where the child writes its rows")


def peak_tflops(device_name: str, given: float = 0.0) -> float | None:
    """The peak dense bfloat16 TFLOP/s of ``device_name`` (``given`` wins), None if unknown."""
    if given > 0:
        return given
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def model_config(args, spec: str, impl: str):
    """The config of ``spec`` (arch:encoder) as ``impl`` trains it, at ``--size``."""
    from benchmarks.speed import with_model
    from segjax.experiments.spec import load_module

    file, _, variant = args.config.partition(":")
    config = with_model(
        load_module(file, "segjax_benchmark_config").get_config(variant or None), spec
    )
    with config.unlocked():
        config.model.dtype = "bfloat16" if "bf16" in impl else "float32"
        config.model.conv_impl = "fused" if impl.endswith("_fused") else "auto"
        config.data.image_size = (args.size, args.size)
    return config


def _series(call, figures: dict, args) -> dict:
    from segjax.benchmark import time_calls, with_throughput

    timed = with_throughput(time_calls(call, args.warmup, args.repeats), figures)
    steps = figures["steps_per_call"]
    timed["step_ms"] = timed["median_ms"] / steps
    return timed


def measure_segjax(spec: str, impl: str, args) -> list[dict]:
    import jax

    from segjax.benchmark import forward_call, train_step_call
    from segjax.models.counting import summarize
    from segjax.runs import prepare_without_data
    from segjax.workdir import DatasetRecord

    config = model_config(args, spec, impl)
    record = DatasetRecord("synthetic", tuple(f"class_{i}" for i in range(args.num_classes)), 3)
    macs = summarize(prepare_without_data(config, record).model, (1, args.size, args.size, 3)).macs
    device = jax.devices()[0].device_kind
    rows = []
    for kind, batches in (("train", args.train_batches), ("infer", args.infer_batches)):
        for batch in (int(b) for b in batches):
            row = {"model": spec, "impl": impl, "kind": kind, "batch": batch, "device": device}
            row["flops_per_image"] = (6 if kind == "train" else 2) * macs
            try:
                with config.unlocked():
                    config.batch_size = batch
                run = prepare_without_data(config, record)
                if kind == "train":
                    call, figures = train_step_call(config, steps=args.steps, run=run)
                else:
                    size = (args.size, args.size)
                    call, figures = forward_call(config, batch, size, steps=args.steps, run=run)
                timed = _series(call, figures, args)
                timed["memory_bytes"] = timed["memory"].get("total_bytes")
                row.update(timed)
            except Exception as error:  # an out-of-memory batch is a row, not the end
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
    return rows


def measure_smp(spec: str, impl: str, args) -> list[dict]:
    import torch

    from benchmarks import smp_reference

    config = model_config(args, spec, impl)
    why_not = smp_reference.unsupported(config)
    if why_not:
        return [{"model": spec, "impl": impl, "skipped": why_not}]
    mode = impl.removeprefix("smp_")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    size = (args.size, args.size)
    flops = smp_reference.forward_flops(config, args.num_classes, 3, size)
    rows = []
    for kind, batches in (("train", args.train_batches), ("infer", args.infer_batches)):
        for batch in (int(b) for b in batches):
            row = {"model": spec, "impl": impl, "kind": kind, "batch": batch, "device": name}
            row["flops_per_image"] = (3 if kind == "train" else 1) * flops
            try:
                with config.unlocked():
                    config.batch_size = batch
                if device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                common = {"mode": mode, "device": device, "steps": args.steps}
                if kind == "train":
                    call, figures = smp_reference.train_step_call(
                        config, args.num_classes, 3, **common
                    )
                else:
                    call, figures = smp_reference.forward_call(
                        config, args.num_classes, 3, batch, size, **common
                    )
                timed = _series(call, figures, args)
                timed["compile_s"] = max(timed["first_s"] - timed["median_ms"] / 1000, 0.0)
                if device == "cuda":
                    timed["memory_bytes"] = int(torch.cuda.max_memory_allocated())
                row.update(timed)
            except Exception as error:  # an out-of-memory batch is a row, not the end
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
    return rows


def child_main(args) -> int:
    spec, impl = args.child.split("/")
    rows = (
        measure_smp(spec, impl, args)
        if impl.startswith("smp")
        else measure_segjax(spec, impl, args)
    )
    with open(args.child_out, "w") as f:
        json.dump(rows, f)
    return 0


def run_child(spec: str, impl: str, timeout: float | None) -> list[dict]:
    """One (model, implementation) measured in a fresh process: this command again. smp's
    processes keep JAX on the CPU, where it only reads the flags."""
    with tempfile.TemporaryDirectory(prefix="segjax-gpu-speed-") as scratch:
        out = os.path.join(scratch, "rows.json")
        command = [sys.executable, "-m", "benchmarks.gpu_speed", *sys.argv[1:]]
        command += [f"--child={spec}/{impl}", f"--child_out={out}", "--json="]
        env = dict(os.environ)
        if impl.startswith("smp"):
            env["JAX_PLATFORMS"] = "cpu"
        try:
            result = subprocess.run(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return [{"model": spec, "impl": impl, "skipped": "stopped at --deadline_s"}]
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace")[-2000:]
            return [{"model": spec, "impl": impl, "error": f"exit {result.returncode}: {tail}"}]
        with open(out) as f:
            return json.load(f)


def with_mfu(rows: list[dict], given_peak: float) -> list[dict]:
    for row in rows:
        peak = peak_tflops(row.get("device", ""), given_peak)
        row["peak_tflops"] = peak
        if peak and "images_per_s" in row:
            row["mfu"] = row["flops_per_image"] * row["images_per_s"] / (peak * 1e12)
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """images/s of each segjax implementation over each smp one it is compared with, per
    (model, kind, batch)."""
    speed = {
        (r["model"], r["kind"], r["batch"], r["impl"]): r["images_per_s"]
        for r in rows
        if "images_per_s" in r
    }
    out = []
    for (model, kind, batch, impl), ours in speed.items():
        for theirs in COMPARED.get(impl, ()):
            other = speed.get((model, kind, batch, theirs))
            if other:
                out.append(
                    {"model": model, "kind": kind, "batch": batch, "segjax": impl,
                     "smp": theirs, "ratio": ours / other}
                )  # fmt: skip
    return out


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(rows: list[dict], ratio_rows: list[dict]) -> None:
    measured = [r for r in rows if "images_per_s" in r]
    devices = sorted({r["device"] for r in measured})
    peaks = sorted({r["peak_tflops"] for r in measured if r.get("peak_tflops")})
    print(f"device: {', '.join(devices) or '-'}; peak dense bf16: {peaks or 'unknown'} TFLOP/s")
    header = ["model", "kind", "batch", "impl", "img/s", "ms/step", "compile s", "MiB", "MFU"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in measured:
        memory, mfu = r.get("memory_bytes"), r.get("mfu")
        cells = [
            r["model"],
            r["kind"],
            str(r["batch"]),
            r["impl"],
            f"{r['images_per_s']:.1f}",
            f"{r['step_ms']:.2f}",
            _cell(r.get("compile_s"), ".1f"),
            _cell(memory / 2**20 if memory else None, ".0f"),
            _cell(mfu, ".1%"),
        ]
        print("| " + " | ".join(cells) + " |")
    if ratio_rows:
        print("\n| model | kind | batch | segjax | smp | segjax / smp images/s |")
        print("|---|---|---|---|---|---|")
        for r in ratio_rows:
            print(
                f"| {r['model']} | {r['kind']} | {r['batch']} | {r['segjax']} | {r['smp']} | "
                f"{r['ratio']:.2f} |"
            )
    for r in rows:
        if "images_per_s" not in r:
            why = r.get("skipped") or r.get("error", "")
            where = " ".join(str(r.get(k, "")) for k in ("model", "impl", "kind", "batch"))
            print(f"not measured: {where.strip()}: {why.splitlines()[-1] if why else ''}")


def main(argv) -> int:
    cli.positional(argv)
    args = flags.FLAGS
    if args.child:
        return child_main(args)
    unknown = sorted(set(args.impls) - set(IMPLS))
    if unknown:
        raise UserError(f"--impls {unknown}: choose from {list(IMPLS)}")
    start, rows = time.time(), []
    for spec in args.models:
        for impl in args.impls:
            left = args.deadline_s - (time.time() - start) if args.deadline_s else None
            if left is not None and left <= 0:
                rows.append({"model": spec, "impl": impl, "skipped": "after --deadline_s"})
                continue
            print(f"measuring {spec} {impl} ...", flush=True)
            rows.extend(run_child(spec, impl, left))
            rows = with_mfu(rows, args.peak_tflops)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"rows": rows, "ratios": ratios(rows)}, f, indent=1)
    print_tables(rows, ratios(rows))
    if args.json:
        print(f"wrote {args.json}")
    if not any("images_per_s" in r for r in rows):
        raise RunError("nothing was measured; see the reasons above")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
