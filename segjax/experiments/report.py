"""The report of a sweep: ``results.md`` (a table), ``results.csv`` and ``results.png``.

    python -m segjax.experiments.report experiments/backbones.py --workdir runs/backbones \\
        [--out experiments/backbones] [--size 256] [--nospeed]

For every finished member: test mIoU and Dice pooled over the whole test set and averaged over
test images, the foreground class's IoU, parameters and MACs at ``--size`` (from shapes alone),
training images/s and inference latency at batch 1 and ``--size`` (measured here, one model at a
time, and cached in the member's ``speed.json``), and the wall times of training and evaluation.
The plot puts test mIoU against parameters and against MACs, one labelled point per model.
Members that differ only in their seed also get a seed-spread table (``seeds.csv`` too), and the
plot shows them as one point per model: the mean, with a bar from the lowest to the highest seed.
"""

import csv
import json
import math
import os
import sys

import jax
import ml_collections
from absl import app, flags, logging

from segjax.benchmark import inference_speed, train_speed
from segjax.experiments.run import collect
from segjax.experiments.seeds import METRICS, SPREAD_FIELDS, group_key, seed_groups, seed_table
from segjax.experiments.spec import load_experiment
from segjax.models.summary import summarize
from segjax.train import model_from_config

COLUMNS = [
    ("name", "model", "{}"),
    ("params", "params", "{:,}"),
    ("gmacs", "GMACs@{size}", "{:.2f}"),
    ("miou", "test mIoU (set)", "{:.4f}"),
    ("dice", "test Dice (set)", "{:.4f}"),
    ("image_miou", "test mIoU (per image)", "{:.4f}"),
    ("image_dice", "test Dice (per image)", "{:.4f}"),
    ("foreground_iou", "fg IoU (set)", "{:.4f}"),
    ("train_img_per_sec", "train img/s", "{:.1f}"),
    ("inference_ms", "infer ms b1@{size}", "{:.1f}"),
    ("train_minutes", "train min", "{:.1f}"),  # wall: compile and validation included
    ("eval_minutes", "test eval min", "{:.1f}"),
]


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the sweep's workdir (as given to the runner)")
    flags.DEFINE_string("out", None, "where to write results.md/.csv/.png (default: workdir)")
    flags.DEFINE_integer("size", 256, "square input size for MACs and inference latency")
    flags.DEFINE_bool("speed", True, "measure training and inference speed (cached per member)")


def model_figures(
    config: ml_collections.ConfigDict, num_classes: int, size: int
) -> tuple[int, int]:
    """(parameters, MACs per image at size x size) of a run's model, from shapes alone."""
    channels = int(config.data.channels)
    model = model_from_config(config.model, num_classes, channels)
    summary = summarize(model, (1, size, size, channels))
    return summary.params, summary.macs


def measured_speed(directory: str, config, size: int) -> dict:
    """Training images/s (the run's own batch, crop size and input pipeline) and batch-1
    inference latency at size x size, measured once on a quiet machine and cached in
    ``speed.json``: the wall times logged during a sweep also count whatever else the machine
    was doing."""
    path = os.path.join(directory, "speed.json")
    device = jax.devices()[0].device_kind
    if os.path.exists(path):
        cached = json.load(open(path))
        if cached.get("size") == size and cached.get("device") == device:
            return cached
    train = train_speed(config, warmup=2, repeats=5, pipeline=True)
    inference = inference_speed(config, 1, (size, size), warmup=2, repeats=5)
    record = {
        "size": size,
        "device": device,
        "train_img_per_sec": train["images_per_s"],
        "train_step_ms": train["ms"],
        "inference_ms": inference["median_ms"],
        "inference_all_ms": inference["ms"],
    }
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return record


def build_rows(experiment, workdir: str, size: int, measure: bool) -> list[dict]:
    split = experiment.eval_split
    rows = []
    for record in collect(experiment, workdir):
        directory = os.path.join(workdir, record["name"])
        config = ml_collections.ConfigDict(json.load(open(os.path.join(directory, "config.json"))))
        classes = [k.removeprefix(f"{split}/iou/") for k in record if k.startswith(f"{split}/iou/")]
        params, macs = model_figures(config, config.data.num_classes or len(classes), size)
        # A binary dataset's foreground is its last class, e.g. ('background', 'nucleus').
        names = list(config.data.class_names)
        foreground = record.get(f"{split}/iou/{names[-1]}") if names else None
        print(f"{record['name']}: {params:,} params", flush=True)
        nan = float("nan")
        speed = measured_speed(directory, config, size) if measure else {}
        rows.append(
            {
                "name": record["name"],
                "seed": config.seed,
                "group": group_key(record["config"], record["overrides"]),
                "arch": config.model.arch,
                "encoder": config.model.encoder or "plain",
                "params": params,
                "gmacs": macs / 1e9,
                "miou": record[f"{split}/miou"],
                "dice": record[f"{split}/dice"],
                "image_miou": record[f"{split}/image_miou"],
                "image_dice": record[f"{split}/image_dice"],
                "foreground_iou": float("nan") if foreground is None else foreground,
                "train_img_per_sec": speed.get("train_img_per_sec", nan),
                "inference_ms": speed.get("inference_ms", nan),
                "logged_train_img_per_sec": record["train_img_per_sec"],
                "train_minutes": record["train_seconds"] / 60,
                "eval_minutes": record["eval_seconds"] / 60,
                "steps": config.total_steps,
                "batch_size": config.batch_size,
                "image_size": "x".join(str(n) for n in config.data.image_size),
            }
        )
    return rows


def budget_line(rows: list[dict]) -> str:
    budgets = {(r["steps"], r["batch_size"], r["image_size"]) for r in rows}
    text = "; ".join(f"{s} steps of batch {b} at {i}" for s, b, i in sorted(budgets))
    return text + (" (one budget for every model)" if len(budgets) == 1 else " (budgets DIFFER)")


def cell(value, fmt: str) -> str:
    """A table cell; a figure that was not measured (``--nospeed``: NaN) shows as a dash."""
    return "-" if isinstance(value, float) and math.isnan(value) else fmt.format(value)


def markdown(rows: list[dict], experiment, size: int, spread: list[dict]) -> str:
    header = [title.format(size=size) for _, title, _ in COLUMNS]
    lines = [
        f"# {experiment.name}: results",
        "",
        f"Training budget: {budget_line(rows)}. Evaluated on the full-size "
        f"`{experiment.eval_split}` images: mIoU and Dice pooled over the whole set's pixels"
        " (set) and averaged over images (per image), means over background and foreground;"
        " fg IoU is the foreground class's.",
        (
            "Train img/s: the run's training step (batch, crop, input pipeline) timed alone after"
            " the sweep, median of 5 steps after 2 warm-up; infer ms: one forward pass of batch 1,"
            " median of 5 after 2 warm-up; "
            if any(not math.isnan(row["inference_ms"]) for row in rows)
            else "Speed not measured for this report (--nospeed); "
        )
        + "train min: wall time of the training command, compile and the final validation pass"
        " included, on a machine that may have been doing other work."
        f" Devices: {jax.devices()[0].device_kind} x {jax.device_count()}.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" + "|---:" * (len(header) - 1) + "|",
    ]
    for row in rows:
        cells = [cell(row[key], fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if spread:
        lines += seed_table(spread)
    lines += ["![test mIoU against parameters and MACs](results.png)", ""]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str) -> None:
    rows = [{k: v for k, v in row.items() if k != "group"} for row in rows]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_seeds_csv(spread: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["name", "seeds"] + [f"{key}_{s}" for key, _ in METRICS for s in SPREAD_FIELDS]
        )
        for summary in spread:
            seeds = " ".join(str(seed) for seed in summary["seeds"])
            values = [summary[key][s] for key, _ in METRICS for s in SPREAD_FIELDS]
            writer.writerow([summary["name"], seeds] + values)


# Models scoring below this fraction of the best are drawn on the plot's bottom edge.
OFF_SCALE = 0.5


def plotted_points(rows: list[dict], spread: list[dict]) -> list[dict]:
    """One point per model: a row, or a seed group's mean with its lowest and highest seed."""
    grouped = {summary["group"] for summary in spread}
    points = [dict(row, low=row["miou"], high=row["miou"]) for row in rows]
    points = [point for point in points if point["group"] not in grouped]
    for summary in spread:
        first = next(row for row in rows if row["group"] == summary["group"])
        miou = summary["miou"]
        name = f"{summary['name']} ({len(summary['seeds'])} seeds)"
        points.append(dict(first, name=name, miou=miou["mean"], low=miou["min"], high=miou["max"]))
    return points


def place_labels(axis, labels: list[tuple[float, float, str]], fontsize: int = 8) -> None:
    """Writes each label beside its point, trying offsets above and below in turn until it does
    not cover a label already placed (sizes estimated in points), so that models with nearly
    equal figures stay readable."""
    axis.autoscale_view()  # the limits the points will be drawn with
    transform = axis.transData
    dpi_scale = 72.0 / axis.figure.dpi  # display pixels -> points
    height, char_width = fontsize * 1.3, fontsize * 0.6
    offsets = [(6, dy) for dy in (4, -11, 13, -20, 22, -29, 31, -38)]
    placed: list[tuple[float, float, float, float]] = []
    for x, y, name in sorted(labels, key=lambda label: -label[1]):
        px, py = (v * dpi_scale for v in transform.transform((x, y)))
        width = char_width * len(name)
        for dx, dy in offsets:
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
            if not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            ):
                break
        else:
            dx, dy = offsets[0]
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
        placed.append(box)
        # A label moved away from its point gets a thin line back to it.
        line = {"arrowstyle": "-", "lw": 0.5, "color": "grey"} if abs(dy) > 11 else None
        axis.annotate(
            name,
            (x, y),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=fontsize,
            arrowprops=line,
        )


def plot(points: list[dict], path: str, size: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    colours = {"unet": "tab:blue", "unetpp": "tab:orange"}
    # A model far below the rest (e.g. one that did not learn) would squeeze the others into a
    # sliver of the axis: it is drawn on the bottom edge instead, labelled with its score.
    best = max(point["miou"] for point in points)
    on_scale = [point for point in points if point["low"] >= OFF_SCALE * best] or points
    off_scale = {point["name"] for point in points} - {point["name"] for point in on_scale}
    low = min(point["low"] for point in on_scale)
    high = max(point["high"] for point in on_scale)
    pad = max(0.06 * (high - low), 0.005)
    bottom = low - (3 if len(on_scale) < len(points) else 1) * pad
    figure, axes = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
    for axis, key, label in (
        (axes[0], "params", "parameters (millions)"),
        (axes[1], "gmacs", f"GMACs per {size}x{size} image"),
    ):
        labels = []
        for point in points:
            x = point[key] / 1e6 if key == "params" else point[key]
            colour = colours[point["arch"].removesuffix("_paper")]
            marker = (
                "^" if "ghost" in point["encoder"] else "o" if point["encoder"] != "plain" else "s"
            )
            name, y = point["name"], point["miou"]
            if name in off_scale:
                name, y, marker = f"{name}: {y:.3f}, below the axis", bottom + pad / 2, "v"
            elif point["high"] > point["low"]:  # several seeds: lowest to highest
                axis.vlines(x, point["low"], point["high"], colors=colour, lw=1.5, zorder=2)
            axis.scatter(x, y, c=colour, marker=marker, s=60, zorder=3)
            labels.append((x, y, name))
        axis.set_xscale("log")
        axis.margins(x=0.12)
        axis.set_ylim(bottom, high + pad)
        place_labels(axis, labels)
        # Plain numbers on the log axis (1, 2, 5, 10, 20 ...), not 10^x labels.
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 3.0, 5.0)))
        axis.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_xlabel(label + " (log scale)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test mIoU (whole set)")
    legend = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=a) for a, c in colours.items()
    ] + [
        plt.Line2D([], [], color="tab:grey", marker=m, ls="", label=e)
        for m, e in (("o", "ResNet encoder"), ("^", "GhostNet encoder"), ("s", "paper (plain)"))
    ]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=9)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(experiment_path: str, workdir: str, out: str, size: int, measure: bool) -> list:
    experiment = load_experiment(experiment_path)
    rows = build_rows(experiment, workdir, size, measure)
    if not rows:
        raise ValueError(f"{workdir}: no finished member of {experiment.name} to report")
    os.makedirs(out, exist_ok=True)
    spread = seed_groups(rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(rows, experiment, size, spread))
    write_csv(rows, os.path.join(out, "results.csv"))
    if spread:
        write_seeds_csv(spread, os.path.join(out, "seeds.csv"))
    missing = len(experiment.members) - len(rows)
    plot(
        plotted_points(rows, spread),
        os.path.join(out, "results.png"),
        size,
        f"{experiment.name}: {budget_line(rows)}"
        + (f"; {missing} member{'s' * (missing > 1)} not finished" if missing else ""),
    )
    return rows


def main(argv) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: python -m segjax.experiments.report EXPERIMENT.py --workdir D")
    args = flags.FLAGS
    if not args.workdir:
        raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.WARNING)
    out = args.out or args.workdir
    try:
        rows = write_report(argv[1], args.workdir, out, args.size, args.speed)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(open(os.path.join(out, "results.md")).read())
    print(f"wrote results.md, results.csv and results.png for {len(rows)} models in {out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
