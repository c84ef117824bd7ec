"""How fast the training input pipeline alone delivers batches (no model), by thread and worker
process count, with the augmentation on the host or on the device (``data.augment.on_device``).

    python -m benchmarks.pipeline_speed --config configs/resnet_unet.py:dsb2018 \\
        --config.data.image_size=256,256 --threads 1,2,4 --workers 0,2 \\
        --json benchmarks/results/pipeline_cpu.json

For each combination the real ``train_iterator`` (the config's dataset, augmentation and
seed) is built, its first batch taken untimed (worker processes start, buffers fill; with
``data.cache`` a whole epoch, so every example is decoded once), then batches are taken for
``--seconds``: images/s is what a training loop that never waits on its step could get. With
the augmentation on the device the host only draws and cuts out windows; the device's part,
``augment_batch`` jitted on one such batch, is timed on its own (``device_warp``), on the
default JAX device.
"""

import json
import os
import statistics
import time

import jax
from absl import flags
from ml_collections import config_flags

from segjax import cli
from segjax.benchmark import time_calls
from segjax.data import device_augment, load_dataset, train_iterator
from segjax.data.pipeline import make_preprocess
from segjax.validation import check_config


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "config file (with :variant)", lock_config=True)
    flags.DEFINE_list("threads", ["1", "2", "4"], "data.num_threads values")
    flags.DEFINE_list("workers", ["0", "2"], "data.num_workers values (grain worker processes)")
    flags.DEFINE_list("where", ["host", "device"], "where the per-pixel augmentation runs")
    flags.DEFINE_list("cache", ["false", "true"], "data.cache values (decoded examples kept)")
    flags.DEFINE_integer("batch", 32, "batch size")
    flags.DEFINE_float("seconds", 10.0, "time each combination this long")
    flags.DEFINE_string("json", None, "write every figure to this JSON file")


def pipeline_rate(config, batch: int, seconds: float) -> dict:
    """Images/s of ``train_iterator`` for ``config`` after its first batch."""
    dataset = load_dataset(config.data)
    iterator = train_iterator(dataset, config.data, batch, config.seed, 0, 1)
    warmup = -(-len(dataset.split("train")) // batch) if config.data.cache else 1
    try:
        start = time.perf_counter()
        for _ in range(warmup):
            next(iterator)
        first_s = time.perf_counter() - start
        count, start = 0, time.perf_counter()
        while count < 3 or time.perf_counter() - start < seconds:
            next(iterator)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        iterator.close()
    return {"batches": count, "seconds": elapsed, "first_batch_s": first_s,
            "images_per_s": count * batch / elapsed}  # fmt: skip


def device_warp_rate(config, batch: int, repeats: int = 10) -> dict:
    """The device's share of on-device augmentation: ``augment_batch`` on one raw batch."""
    dataset = load_dataset(config.data)
    iterator = train_iterator(dataset, config.data, batch, config.seed, 0, 1)
    raw = jax.device_put(next(iterator))
    iterator.close()
    preprocess = make_preprocess(dataset, config.data)
    warp = jax.jit(lambda b: device_augment.augment_batch(b, preprocess))
    result = time_calls(lambda: jax.block_until_ready(warp(raw)), 2, repeats)
    return {"median_ms": result["median_ms"], "images_per_s": batch / (result["median_ms"] / 1e3),
            "device": jax.devices()[0].device_kind}  # fmt: skip


def with_settings(base, threads: int, workers: int, on_device: bool, cache: bool = False):
    config = base.copy_and_resolve_references()
    with config.unlocked():
        config.data.num_threads, config.data.num_workers = threads, workers
        config.data.augment.on_device, config.data.cache = on_device, cache
    return check_config(config)


def main(argv) -> int:
    cli.positional(argv)
    cli.require("config")
    args = flags.FLAGS
    base = check_config(args.config)
    rows = []
    size = "x".join(str(n) for n in base.data.image_size)
    print(
        f"{base.data.name} {base.data.path}, batch {args.batch} at {size}, {os.cpu_count()} cores"
    )
    print("| augmentation | decoded cache | threads | worker processes | images/s | warm-up s |")
    print("|---|---|---:|---:|---:|---:|")
    for where in args.where:
        for cache in (c.lower() in ("true", "1", "yes") for c in args.cache):
            for workers in (int(w) for w in args.workers):
                for threads in (int(t) for t in args.threads):
                    config = with_settings(base, threads, workers, where == "device", cache)
                    row = {"where": where, "cache": cache, "threads": threads, "workers": workers}
                    row.update(pipeline_rate(config, args.batch, args.seconds))
                    rows.append(row)
                    print(
                        f"| {where} | {'yes' if cache else 'no'} | {threads} | {workers} | "
                        f"{row['images_per_s']:.1f} | {row['first_batch_s']:.1f} |",
                        flush=True,
                    )
    result = {"cores": os.cpu_count(), "batch": args.batch, "rows": rows}
    result["image_size"] = list(base.data.image_size)
    if "device" in args.where:
        warp = device_warp_rate(with_settings(base, 2, 0, True), args.batch)
        result["device_warp"] = warp
        print(
            f"device's part of on-device augmentation ({warp['device']}): "
            f"{warp['median_ms']:.1f} ms per batch of {args.batch}, {warp['images_per_s']:.0f} "
            "images/s"
        )
    best = max(rows, key=lambda r: r["images_per_s"])
    median = statistics.median(r["images_per_s"] for r in rows)
    print(
        f"fastest: {best['where']}, cache {best['cache']}, {best['threads']} threads, "
        f"{best['workers']} workers: {best['images_per_s']:.1f} images/s (median over "
        f"combinations {median:.1f})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
