"""The answer table of ``experiments/imagenet_init.py``: per encoder and initialisation, the test
mIoU and nucleus IoU over seeds (mean +- sample sd [min, max], as the report's seed spread),
beside the model's size, compute and batch-1 latency at 256x256 (``benchmarks.deploy --json``:
JAX, onnxruntime float32 and int8).

    python -m segjax.experiments.report experiments/imagenet_init.py --workdir runs/imagenet_init \\
        --out experiments/imagenet_init
    python -m benchmarks.deploy --models unet:mobilenet_v2,unet:efficientnet_lite0,\\
unet:ghostnet_100,unet:resnet34 --batches 1 --nosmp --json experiments/imagenet_init/deploy.json
    python experiments/imagenet_init/summary.py --results experiments/imagenet_init/results.csv \\
        --deploy experiments/imagenet_init/deploy.json --out experiments/imagenet_init/summary.md
"""

import argparse
import csv
import json
import re
import statistics
import sys

NAME = re.compile(r"^unet_(?P<encoder>[a-z0-9]+)_(?P<init>imagenet|random)_seed(?P<seed>\d+)$")


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f} (1 seed)"
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    return f"{mean:.4f} +- {sd:.4f} [{min(values):.4f}, {max(values):.4f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="the report's results.csv")
    parser.add_argument("--deploy", required=True, help="benchmarks.deploy --json output")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.results, newline="") as file:
        rows = list(csv.DictReader(file))
    with open(args.deploy) as file:
        measured = json.load(file)
    deploy = {row["model"].split(":")[1]: row for row in measured["rows"]}
    size = measured["size"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        match = NAME.match(row["name"])
        if match:
            groups.setdefault((row["encoder"], match["init"]), []).append(row)
    if not groups:
        print(f"error: {args.results}: no imagenet_init members", file=sys.stderr)
        return 2
    lines = [
        "| encoder | init | seeds | test mIoU | test nucleus IoU | params | GMACs@256 | "
        f"JAX ms b1@{size} | ORT fp32 ms | ORT int8 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (encoder, init), members in groups.items():
        members.sort(key=lambda r: int(r["seed"]))
        speed = deploy.get(encoder, {}).get("runtimes", {})

        def latency(runtime, speed=speed):
            figure = speed.get(runtime, {}).get("1", {}).get("median_ms")
            return f"{figure:.1f}" if figure is not None else "-"

        lines.append(
            f"| {encoder} | {init} | {','.join(r['seed'] for r in members)} | "
            f"{spread([float(r['miou']) for r in members])} | "
            f"{spread([float(r['highlight_iou']) for r in members])} | "
            f"{int(members[0]['params']):,} | {float(members[0]['gmacs']):.2f} | "
            f"{latency('jax')} | {latency('ort_fp32')} | {latency('ort_int8')} |"
        )
    with open(args.out, "w") as file:
        file.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
