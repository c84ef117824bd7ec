"""Training and inference speed of one or more configs, with the smp ratio where smp is installed.

    python -m benchmarks.speed --config configs/resnet_unet.py:dsb2018 \\
        --models unet:resnet34,unet:ghostnet_100 [--json out.json]

For each model, in fresh processes of its own (``--isolate``; ``--processes`` of them, their
calls pooled, all but the first loading the first's compiled executables from a shared
compilation cache): training step time with synthetic on-device batches and with the real input
pipeline (batch ``config.batch_size`` at ``config.data.image_size``), and inference latency at
batch 1 and 16 at ``--inference_size``.
Medians over ``--repeats`` timed calls after ``--warmup`` calls (the first compiles). When torch
and segmentation_models.pytorch are installed (``pip install -e '.[bench]'``) the equivalent smp
model runs the same measurements, its calls alternating with segjax's, and the table shows the
ratio smp time / segjax time (> 1: segjax is faster), the median over rounds of two calls run
back to back, with its 95% interval; rounds go on until that interval is within ``--precision``
of the ratio (``--min_seconds`` at least, ``--max_seconds`` at most). "XLA MiB" is the training
executable's memory by XLA's own account (arguments, outputs, temporaries).
"""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

import jax
from absl import flags
from ml_collections import config_flags

from benchmarks import smp_reference
from segjax import cli, validation
from segjax.benchmark import (
    forward_call,
    median_interval,
    paired_quotients,
    time_interleaved,
    train_speed,
    train_step_call,
    with_throughput,
)
from segjax.errors import RunError
from segjax.runs import prepare

# Untimed, after each call: PyTorch's and XLA's worker threads spin a little after a call ends.
PAUSE_S = 0.05


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "config file (with :variant)", lock_config=True)
    flags.DEFINE_list(
        "models",
        [],
        "arch[:encoder] pairs to measure in turn, each with the config's "
        "training setup (default: the config's own model), e.g. unet:resnet34,unet:ghostnet_100",
    )
    flags.DEFINE_integer("warmup", 2, "untimed calls first (the first one compiles)")
    flags.DEFINE_integer("repeats", 5, "timed calls at least; the median is reported")
    flags.DEFINE_float(
        "precision",
        0.03,
        "with smp: rounds go on until the ratio's 95%% interval lies within this fraction of it "
        "(this 2-core VM's calls scatter by 5-25%% from one to the next, quick ones most)",
    )
    flags.DEFINE_float("min_seconds", 10.0, "with smp: time each ratio's rounds this long at least")
    flags.DEFINE_float(
        "max_seconds", 300.0, "with smp: stop a ratio's rounds after this long, however precise"
    )
    flags.DEFINE_integer("inference_size", 256, "square input size for the inference figures")
    flags.DEFINE_list("inference_batches", ["1", "16"], "batch sizes for the inference figures")
    flags.DEFINE_bool("pipeline", True, "also time training with the real input pipeline")
    flags.DEFINE_bool(
        "smp", True, "also run the segmentation_models.pytorch equivalent if installed"
    )
    flags.DEFINE_string("json", None, "write every figure to this JSON file")
    flags.DEFINE_bool(
        "isolate",
        True,
        "measure each model in a fresh process, so that no thread pool of an earlier "
        "measurement (the input pipeline's, PyTorch's) runs beside a later one",
    )
    flags.DEFINE_integer(
        "processes",
        10,
        lower_bound=1,
        help="with --isolate: measure each model in this many fresh processes, one after another, "
        "and pool their rounds (each gets 1/N of the time limits; the pipeline is timed in the "
        "first): a process settles in a faster or slower state for its whole life",
    )


def with_model(base, spec: str):
    """A copy of ``base`` with ``model.arch`` and ``model.encoder`` from ``arch[:encoder]``."""
    arch, _, encoder = spec.partition(":")
    config = base.copy_and_resolve_references()
    with config.unlocked():
        config.model.arch, config.model.encoder = arch, encoder
    return config


def name_of(config) -> str:
    model = config.model
    name = f"{model.arch}/{model.encoder or 'plain'}"
    return name + ("/ghost-decoder" if model.decoder_block == "ghost" else "")


def precise(quotients: list[float], precision: float) -> bool:
    """Whether the 95% interval of the quotients' median lies within ``precision`` of it."""
    if len(quotients) < 6:
        return False
    median, (low, high) = statistics.median(quotients), median_interval(quotients)
    return median * (1 - precision) <= low and high <= median * (1 + precision)


def measure(config, args) -> dict:
    """One model's figures. Where smp runs, each of its measurements is interleaved with
    segjax's (``time_interleaved``: the two calls alternate, round by round) and the ratio is
    the median of the rounds' quotients, so the machine's speed drifting between two series
    does not move it; rounds go on until that ratio is known to ``--precision``. Inference is
    timed first and the input pipeline last and alone, as the pipeline leaves threads behind
    that would share the CPU with whatever is timed after it."""
    size = (args.inference_size, args.inference_size)
    batches = [int(b) for b in args.inference_batches]
    row = {"model": name_of(config), "inference": {}}
    why_not = smp_reference.available() if args.smp else "--nosmp"
    why_not = why_not or smp_reference.unsupported(config)
    if why_not:
        row["smp"] = {"skipped": why_not}
    else:
        run = prepare(config)
        channels, classes = run.input_shape[-1], max(run.dataset.num_classes, 1)
        row["smp"], row["ratio"] = {"inference": {}}, {"inference": {}}
        row["ratio_interval"] = {"inference": {}}

    def timed(segjax_call, smp_call):
        """(segjax's series, smp's series or None, their ratio and its interval or None)."""
        if smp_call is None:
            series = time_interleaved({"segjax": segjax_call[0]}, args.warmup, args.repeats)
            return with_throughput(series["segjax"], segjax_call[1]), None, None
        series = time_interleaved(
            {"segjax": segjax_call[0], "smp": smp_call[0]},
            args.warmup,
            args.repeats,
            PAUSE_S,
            args.min_seconds,
            max_repeats=10_000,
            enough=lambda ms: precise(paired_quotients(ms["smp"], ms["segjax"]), args.precision),
            max_seconds=args.max_seconds,
        )
        quotients = paired_quotients(series["smp"]["ms"], series["segjax"]["ms"])
        ratio = (statistics.median(quotients), list(median_interval(quotients)))
        ours = with_throughput(series["segjax"], segjax_call[1])
        return ours, with_throughput(series["smp"], smp_call[1]), ratio

    for b in batches:
        smp_call = None
        if not why_not:
            smp_call = smp_reference.forward_call(config, classes, channels, b, size)
        row["inference"][b], theirs, ratio = timed(forward_call(config, b, size), smp_call)
        if theirs is not None:
            row["smp"]["inference"][b] = theirs
            row["ratio"]["inference"][b], row["ratio_interval"]["inference"][b] = ratio
    smp_call = None if why_not else smp_reference.train_step_call(config, classes, channels)
    row["train"], theirs, ratio = timed(train_step_call(config), smp_call)
    if theirs is not None:
        row["smp"]["train"] = theirs
        row["ratio"]["train"], row["ratio_interval"]["train"] = ratio
    if args.pipeline:
        row["train_pipeline"] = train_speed(config, args.warmup, args.repeats, pipeline=True)
    return row


def ratio_cell(ratio: float, interval: list[float]) -> str:
    return f"{ratio:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def print_table(rows: list[dict], args) -> None:
    batch_cols = [int(b) for b in args.inference_batches]
    header = ["model", "train ms", "train img/s", "compile s", "XLA MiB", "pipeline img/s"]
    header += [f"infer b{b} ms" for b in batch_cols]
    header += ["smp train ms", "train ratio"] + [f"smp b{b} ms" for b in batch_cols]
    header += [f"b{b} ratio" for b in batch_cols]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        train, smp = row["train"], row["smp"]
        cells = [
            row["model"],
            f"{train['median_ms']:.0f}",
            f"{train['images_per_s']:.1f}",
            f"{train['compile_s']:.1f}",
            f"{train['memory'].get('total_bytes', float('nan')) / 2**20:.0f}",
            f"{row['train_pipeline']['images_per_s']:.1f}" if "train_pipeline" in row else "-",
        ]
        cells += [f"{row['inference'][b]['median_ms']:.1f}" for b in batch_cols]
        if "skipped" in smp:
            cells += ["-", "-"] + ["-"] * (2 * len(batch_cols))
        else:
            ratio, interval = row["ratio"], row["ratio_interval"]
            cells += [
                f"{smp['train']['median_ms']:.0f}",
                ratio_cell(ratio["train"], interval["train"]),
            ]
            cells += [f"{smp['inference'][b]['median_ms']:.1f}" for b in batch_cols]
            cells += [
                ratio_cell(ratio["inference"][b], interval["inference"][b]) for b in batch_cols
            ]
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        if "skipped" in row["smp"]:
            print(f"{row['model']}: smp not run: {row['smp']['skipped']}")
    first = rows[0]["train"]
    print(
        f"\n{jax.devices()[0].device_kind} x {jax.device_count()}; train batch "
        f"{first['batch_size']} at {first['image_size'][0]}x{first['image_size'][1]}, "
        f"inference at {args.inference_size}x{args.inference_size}; medians of {args.repeats} "
        f"calls or more after {args.warmup} warm-up"
        + (f", pooled over {args.processes} fresh processes" if args.isolate else "")
        + "; ratio = smp time / segjax time (> 1: "
        "segjax faster), the median over rounds of the two calls run back to back [its 95% "
        f"interval; rounds went on until within {args.precision:.0%} or {args.max_seconds:.0f} s]"
    )


def configs_from_flags(argv) -> list:
    """The configs that ``--config`` and ``--models`` name (the benchmark CLIs share them)."""
    cli.positional(argv)
    cli.require("config")
    args = flags.FLAGS
    return [with_model(args.config, spec) for spec in args.models] or [args.config]


def write_rows(path: str | None, rows: list[dict]) -> None:
    """The rows, with the device they were measured on, as JSON at ``path`` (if given)."""
    if path:
        with open(path, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "rows": rows}, f, indent=1)
        print(f"wrote {path}")


def measure_isolated(spec: str, extra: tuple[str, ...] = (), env: dict | None = None) -> dict:
    """``measure`` of one ``--models`` spec in a fresh process: this command again, its flags
    as given, with that one model and ``extra`` (later flags win), ``env`` added to its
    environment, and its row written to a scratch file."""
    with tempfile.TemporaryDirectory(prefix="segjax-speed-") as scratch:
        path = os.path.join(scratch, "row.json")
        command = [sys.executable, "-m", "benchmarks.speed", *sys.argv[1:]]
        command += [f"--models={spec}", f"--json={path}", "--noisolate", *extra]
        result = subprocess.run(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        if result.returncode != 0:
            raise RunError(
                f"measuring {spec} failed:\n{result.stderr.decode(errors='replace')[-3000:]}"
            )
        with open(path) as f:
            row = json.load(f)["rows"][0]
    parts = (row, row["smp"], row.get("ratio", {}), row.get("ratio_interval", {}))
    for part in parts:  # JSON made the batch sizes strings
        if "inference" in part:
            part["inference"] = {int(b): v for b, v in part["inference"].items()}
    return row


def measure_in_processes(spec: str, args) -> dict:
    """``measure_isolated`` in ``--processes`` fresh processes, their rows pooled
    (``pooled_row``). Each process gets 1/N of ``--min_seconds`` and ``--max_seconds`` and
    sqrt(N) times ``--precision``, so that the pooled rounds reach about the precision asked
    for in about the time one process would have taken. The processes share a persistent
    compilation cache of their own, empty at the start, so the first compiles (and reports the
    compile time) and the others load its executables instead of compiling them again."""
    n = args.processes
    extra = (
        f"--min_seconds={args.min_seconds / n}",
        f"--max_seconds={args.max_seconds / n}",
        f"--precision={args.precision * math.sqrt(n)}",
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="segjax-speed-cache-") as cache:
        env = {
            "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
        for i in range(n):
            pipeline = () if i == 0 else ("--nopipeline",)
            rows.append(measure_isolated(spec, extra + pipeline, env))
            print(f"  process {i + 1}/{n} done", flush=True)
    return pooled_row(rows)


def pooled_series(series: list[dict]) -> dict:
    """One timed series from several processes' (the first's compile figures), its median and
    throughput recomputed over every call."""
    ms = [t for one in series for t in one["ms"]]
    median = statistics.median(ms)
    per_s = series[0]["batch_size"] / (median / 1000)
    return {**series[0], "ms": ms, "median_ms": median, "repeats": len(ms), "images_per_s": per_s}


def pooled_row(rows: list[dict]) -> dict:
    """Rows of one model measured in several processes, as one: every series' calls pooled,
    each ratio the median of every process's rounds' quotients with its interval, and each
    process's own ratio kept (``ratio_by_process``) to show how far processes differ."""
    row = {**rows[0], "processes": len(rows)}
    row["train_compile_s_by_process"] = [r["train"]["compile_s"] for r in rows]
    keys = [("train",)] + [("inference", b) for b in rows[0]["inference"]]

    def get(part, key):
        return part[key[0]] if len(key) == 1 else part[key[0]][key[1]]

    def put(part, key, value):
        if len(key) == 1:
            part[key[0]] = value
        else:
            part.setdefault(key[0], {})[key[1]] = value

    row["inference"] = {}
    for key in keys:
        put(row, key, pooled_series([get(r, key) for r in rows]))
    if "skipped" in rows[0]["smp"]:
        return row
    row["smp"], row["ratio"], row["ratio_interval"] = {}, {}, {}
    row["ratio_by_process"] = {}
    for key in keys:
        put(row["smp"], key, pooled_series([get(r["smp"], key) for r in rows]))
        quotients = paired_quotients(get(row["smp"], key)["ms"], get(row, key)["ms"])
        put(row["ratio"], key, statistics.median(quotients))
        put(row["ratio_interval"], key, list(median_interval(quotients)))
        put(row["ratio_by_process"], key, [get(r["ratio"], key) for r in rows])
    return row


def main(argv) -> int:
    args = flags.FLAGS
    rows = []
    configs = configs_from_flags(argv)
    for config in configs:  # a bad model fails here in one line, before anything is timed
        validation.build_model(config, num_classes=1, in_channels=3)
    for spec, config in zip(args.models or [None], configs, strict=True):
        print(f"measuring {name_of(config)} ...", flush=True)
        isolated = args.isolate and spec is not None
        rows.append(measure_in_processes(spec, args) if isolated else measure(config, args))
    print_table(rows, args)
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
