"""The training-loss and validation nucleus-IoU curves of every member of
``experiments/imagenet_init.py``, in one figure: colour = encoder, solid = ImageNet
initialisation, dashed = random, one line per seed (the
losses averaged over 100 steps).

    python experiments/imagenet_init/curves.py --workdir runs/imagenet_init \\
        --out experiments/imagenet_init/curves.png
"""

import argparse
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = re.compile(r"^unet_(?P<encoder>[a-z0-9]+)_(?P<init>imagenet|random)_seed(?P<seed>\d+)$")
SMOOTHING = 4  # logged losses averaged per point: one batch's loss is too noisy to read
COLOURS = {
    "mobilenetv2": "tab:blue",
    "efficientnetlite0": "tab:orange",
    "ghostnet100": "tab:green",
    "resnet34": "tab:red",
}


def read_curves(directory: str) -> tuple[list, list]:
    """([(step, train loss)], [(step, validation nucleus IoU)]) from a run's metrics.jsonl."""
    loss, iou = [], []
    with open(os.path.join(directory, "metrics.jsonl")) as file:
        for line in file:
            record = json.loads(line)
            if "train/loss" in record:
                loss.append((record["step"], record["train/loss"]))
            if "eval/iou/nucleus" in record:
                iou.append((record["step"], record["eval/iou/nucleus"]))
    return loss, iou


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    members = sorted(n for n in os.listdir(args.workdir) if NAME.match(n))
    if not members:
        print(f"error: {args.workdir}: no imagenet_init members", file=sys.stderr)
        return 2
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in members:
        match = NAME.match(name)
        path = os.path.join(args.workdir, name)
        if not os.path.exists(os.path.join(path, "metrics.jsonl")):
            continue
        loss, iou = read_curves(path)
        style = dict(
            color=COLOURS.get(match["encoder"], "black"),
            linestyle="-" if match["init"] == "imagenet" else "--",
            alpha=0.9 if match["seed"] == "0" else 0.55,
            label=f"{match['encoder']} {match['init']}" if match["seed"] == "0" else None,
        )
        if len(loss) >= SMOOTHING:
            steps, values = zip(*loss, strict=True)
            smooth = [
                sum(values[i - SMOOTHING + 1 : i + 1]) / SMOOTHING
                for i in range(SMOOTHING - 1, len(values))
            ]
            left.plot(steps[SMOOTHING - 1 :], smooth, **style)
        if iou:
            right.plot(*zip(*iou, strict=True), marker="o", markersize=3, **style)
    left.set(xlabel="step", ylabel="training loss (cross-entropy + Dice)", yscale="log")
    left.set_title(f"training loss, mean of the last {SMOOTHING} logs (every 25 steps)")
    right.set(xlabel="step", ylabel="validation nucleus IoU")
    right.set_title("validation nucleus IoU (every 250 steps)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    figure.suptitle("U-Net on DSB 2018: ImageNet (solid) vs random (dashed) initialisation")
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(members)} members)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
