"""The speed phase of a sweep member: ``python -m segjax.experiments.speed --workdir D --size 256``.

Times the run's model as its config trains it (batch, crop size and the real input pipeline) and
one batch-1 forward pass at ``--size`` x ``--size``, medians of 5 calls after 2 warm-up, and
writes ``D/speed.json``. The runner runs it after a member's training and evaluation, one member
at a time, so the figures are not shared with other work of the sweep; the report only reads
them. ``--data_path`` times a run trained on another machine with this machine's copy of its
data (the model and the pipeline stay the run's), so that members trained on different machines
can be timed on one.
"""

import json
import os

from absl import flags

from segjax import cli

WARMUP, REPEATS = 2, 5


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "a training run's workdir")
    flags.DEFINE_integer("size", 256, "square input size of the inference latency")
    flags.DEFINE_string(
        "data_path",
        None,
        "where this machine has the run's data (data.path), for a run trained on another machine",
    )


def measure(workdir: str, size: int, data_path: str | None = None) -> dict:
    import jax

    from segjax.benchmark import inference_speed, train_speed
    from segjax.files import write_atomically
    from segjax.runs import load_config

    config = load_config(workdir)
    if data_path is not None:
        config.data.path = data_path
    train = train_speed(config, warmup=WARMUP, repeats=REPEATS, pipeline=True)
    inference = inference_speed(config, 1, (size, size), warmup=WARMUP, repeats=REPEATS)
    record = {
        "size": size,
        "device": jax.devices()[0].device_kind,
        "train_img_per_sec": train["images_per_s"],
        "train_step_ms": train["ms"],
        "inference_ms": inference["median_ms"],
        "inference_all_ms": inference["ms"],
    }
    write_atomically(os.path.join(workdir, "speed.json"), json.dumps(record, indent=2))
    return record


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdir")
    args = flags.FLAGS
    record = measure(args.workdir, args.size, args.data_path)
    print(
        f"{args.workdir}: training {record['train_img_per_sec']:.1f} img/s, inference "
        f"{record['inference_ms']:.1f} ms at batch 1, {args.size}x{args.size}"
    )
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
