"""A whole sweep's throughput with N of its members running at once on one device
(``segjax.experiments.run --parallel N``).

    python -m benchmarks.sweep_packing --config configs/resnet_unet.py:dsb2018 \\
        --parallel 1,4,8 --set total_steps=300 --set model.dtype=bfloat16 \\
        --json benchmarks/results/sweep_packing_h100.json

The sweep for N at once is ``--rounds`` x N seeds of one config (its overrides from ``--set``;
as many members as slots, so each N fills its slots as often), trained and
evaluated by the runner exactly as a real sweep is (each member's processes, its evaluation,
one compilation cache per sweep; speed phases off), from an empty workdir for each N. Its
throughput is the images all members trained over the wall time of the whole sweep, start-up,
compilation and evaluation included, as a researcher waits for them.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

from segjax import cli
from segjax.errors import RunError

EXPERIMENT = """from segjax.experiments.spec import Experiment, Member


def get_experiment():
    overrides = {overrides!r}
    members = [Member(f"seed{{i}}", {config!r}, {{**overrides, "seed": i}}) for i in range({n})]
    return Experiment(name="packing", members=members, eval_split="validation")
"""


def define_flags() -> None:
    flags.DEFINE_string("config", None, "config file (with :variant) of every member")
    flags.DEFINE_multi_string("set", [], "key=value: a config override of every member")
    flags.DEFINE_integer("rounds", 1, "members per slot: a sweep of N at once has rounds x N")
    flags.DEFINE_list("parallel", ["1", "4", "8"], "members at once, one sweep each")
    flags.DEFINE_string("workdir", None, "where the sweeps run (default: a temporary directory)")
    flags.DEFINE_string("json", None, "write the figures to this JSON file")


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.removeprefix("config.")] = value
    return out


def trained_images(workdir: str) -> int:
    """Images the sweep's members trained: steps x batch size, from each member's records."""
    total = 0
    for member in sorted(os.listdir(workdir)):
        config_path = os.path.join(workdir, member, "config.json")
        metrics_path = os.path.join(workdir, member, "metrics.jsonl")
        if not (os.path.isfile(config_path) and os.path.isfile(metrics_path)):
            continue
        with open(config_path) as f:
            config = json.load(f)
        config = config.get("config", config)
        with open(metrics_path) as f:
            steps = max((json.loads(line)["step"] for line in f if line.strip()), default=0)
        total += steps * int(config["batch_size"])
    return total


def run_sweep(experiment: str, workdir: str, parallel: int) -> dict:
    command = [sys.executable, "-m", "segjax.experiments.run", experiment, "--workdir", workdir,
               "--nospeed", f"--parallel={parallel}"]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        output = (result.stdout[-2000:] + result.stderr[-2000:]).strip()
        raise RunError(f"the sweep with --parallel={parallel} failed:\n{output}")
    images = trained_images(workdir)
    return {"parallel": parallel, "wall_s": wall, "images": images, "images_per_s": images / wall}


def main(argv) -> int:
    cli.positional(argv)
    cli.require("config")
    args = flags.FLAGS
    config = args.config
    file, _, variant = config.partition(":")
    config = os.path.abspath(file) + (f":{variant}" if variant else "")
    overrides = parse_overrides(args.set)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return measure(args, config, overrides, args.workdir)
    # Without --workdir the members' workdirs are scratch (hundreds of MB): removed afterwards.
    with tempfile.TemporaryDirectory(prefix="segjax-packing-") as root:
        return measure(args, config, overrides, root)


def measure(args, config: str, overrides: dict, root: str) -> int:
    """Runs the sweep once per --parallel value under root and prints the table."""
    rows = []
    print(f"{args.rounds} member(s) per slot of {args.config} {overrides}")
    print("| members at once | members | wall s | images trained | sweep images/s | vs first |")
    print("|---:|---:|---:|---:|---:|---:|")
    for parallel in (int(p) for p in args.parallel):
        members = parallel * args.rounds
        experiment = os.path.join(root, f"packing{parallel}.py")
        with open(experiment, "w") as f:
            f.write(EXPERIMENT.format(overrides=overrides, config=config, n=members))
        row = run_sweep(experiment, os.path.join(root, f"parallel{parallel}"), parallel)
        row["members"] = members
        rows.append(row)
        speedup = row["images_per_s"] / rows[0]["images_per_s"]
        print(
            f"| {parallel} | {members} | {row['wall_s']:.1f} | {row['images']} | "
            f"{row['images_per_s']:.1f} | {speedup:.2f}x |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "overrides": overrides, "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
