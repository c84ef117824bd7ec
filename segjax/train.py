"""Trains a model: ``python -m segjax.train --config configs/resnet_unet.py --workdir runs/x``.

Any config key can be overridden (``--config.optimizer.learning_rate=3e-4``). Re-running the same
command resumes the run; ``--force_config`` resumes it with a changed config. The loop is
``segjax.trainer.train_and_evaluate``; exit codes follow ``segjax.cli``.
"""

import json

import jax
from absl import flags
from ml_collections import config_flags

from segjax import cli, parallel
from segjax.trainer import train_and_evaluate


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints and logs")
    flags.DEFINE_bool(
        "force_config",
        False,
        "resume a workdir whose config.json differs from --config in keys that may not change "
        "on resume (the change is recorded in config_changes.jsonl)",
    )
    flags.DEFINE_string(
        "coordinator", None, "host:port of process 0, for multi-process runs started by hand"
    )
    flags.DEFINE_integer("num_processes", None, "with --coordinator")
    flags.DEFINE_integer("process_id", None, "with --coordinator")


def main(argv) -> int:
    cli.positional(argv)
    cli.require("config", "workdir")
    args = flags.FLAGS
    parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    metrics = train_and_evaluate(args.config, args.workdir, args.force_config)
    if metrics and jax.process_index() == 0:
        keys = ("miou", "dice", "pixel_accuracy", "dsb_score", "mask_ap", "mask_ap50")
        print(json.dumps({k: round(v, 4) for k, v in metrics.items() if k in keys}))
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
