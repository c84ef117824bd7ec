"""The report of a sweep: ``results.md`` (a table), ``results.csv`` and ``results.png``.

    python -m segjax.experiments.report experiments/backbones.py --workdir runs/backbones \\
        [--out experiments/backbones]

For every finished member: mIoU and Dice on the experiment's ``eval_split`` (columns named
after it), pooled over the whole set and averaged over images, the IoU of the experiment's
``highlight_class`` if it names one, parameters and MACs at the experiment's ``size`` (from
shapes alone), training images/s and inference latency at batch 1 (measured by the runner's
speed phase, read from the member's ``speed.json``), and the wall times of training and
evaluation. The plot puts that mIoU against parameters and against MACs, one labelled point per
model, coloured by architecture and marked by encoder family. Members that differ only in their
seed also get a seed-spread table (``seeds.csv`` too), and the plot shows them as one point per
model: the mean, with a bar from the lowest to the highest seed.
"""

import csv
import json
import os

from absl import flags

from segjax import cli
from segjax.errors import UserError
from segjax.experiments import curves as curves_lib
from segjax.experiments import instance_report, paired
from segjax.experiments.records import collect, read_speed
from segjax.experiments.report_parts import (
    MARKERS,
    budget_fields,
    budget_line,
    cell,
    encoder_family,
    finish_figure,
    markdown_table,
    place_labels,
    scored_images,
    speed_fields,
    write_csv,
)
from segjax.experiments.seeds import (
    METRICS,
    SEED_SUFFIX,
    SPREAD_FIELDS,
    group_key,
    seed_groups,
    seed_table,
)
from segjax.experiments.spec import load_experiment
from segjax.model_config import model_from_config
from segjax.models.counting import summarize
from segjax.runs import load_config
from segjax.workdir import read_dataset_record

COLUMNS = [
    ("name", "model", "{}"),
    ("params", "params", "{:,}"),
    ("gmacs", "GMACs@{size}", "{:.2f}"),
    ("miou", "{split} mIoU (set)", "{:.4f}"),
    ("dice", "{split} Dice (set)", "{:.4f}"),
    ("image_miou", "{split} mIoU (per image)", "{:.4f}"),
    ("image_dice", "{split} Dice (per image)", "{:.4f}"),
    ("highlight_iou", "{highlight} IoU (set)", "{:.4f}"),
    ("train_img_per_sec", "train img/s", "{:.1f}"),
    ("inference_ms", "infer ms b1@{size}", "{:.1f}"),
    ("train_minutes", "train min", "{:.1f}"),  # wall: compile and validation included
    ("eval_minutes", "{split} eval min", "{:.1f}"),
]


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the sweep's workdir (as given to the runner)")
    flags.DEFINE_string("out", None, "where to write results.md/.csv/.png (default: workdir)")


def model_figures(config, num_classes: int, size: int) -> tuple[int, int]:
    """(parameters, MACs per image at size x size) of a run's model, from shapes alone."""
    channels = int(config.data.channels)
    model = model_from_config(config.model, num_classes, channels)
    summary = summarize(model, (1, size, size, channels))
    return summary.params, summary.macs


def build_rows(experiment, workdir: str) -> list[dict]:
    split, size, nan = experiment.eval_split, experiment.size, float("nan")
    rows = []
    for record in collect(experiment, workdir):
        directory = os.path.join(workdir, record["name"])
        config = load_config(directory)
        classes = [k.removeprefix(f"{split}/iou/") for k in record if k.startswith(f"{split}/iou/")]
        params, macs = model_figures(config, config.data.num_classes or len(classes), size)
        highlight = record.get(f"{split}/iou/{experiment.highlight_class}", nan)
        print(f"{record['name']}: {params:,} params", flush=True)
        speed = read_speed(directory, size) or {}
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
                "highlight_iou": highlight,
                **speed_fields(speed),
                "device": speed.get("device", ""),
                "logged_train_img_per_sec": record["train_img_per_sec"],
                **budget_fields(record, config),
            }
        )
    return rows


def columns(experiment) -> list[tuple[str, str, str]]:
    """The table's (row key, title, format); the highlight column only if the experiment names
    a class."""
    titles = {
        "size": experiment.size,
        "highlight": experiment.highlight_class,
        "split": experiment.eval_split,
    }
    return [
        (key, title.format(**titles), fmt)
        for key, title, fmt in COLUMNS
        if key != "highlight_iou" or experiment.highlight_class
    ]


def markdown(rows: list[dict], experiment, spread: list[dict]) -> str:
    table = columns(experiment)
    devices = sorted({row["device"] for row in rows if row["device"]})
    highlight = experiment.highlight_class
    lines = [
        f"# {experiment.name}: results",
        "",
        f"Training budget: {budget_line(rows)}. Evaluated on "
        f"{scored_images(rows, experiment.eval_split)}: mIoU and Dice pooled over the whole set's"
        " pixels (set) and averaged over images (per image), means over the classes"
        + (f"; {highlight} IoU is that class's." if highlight else "."),
        (
            "Train img/s: the run's training step (batch, crop, input pipeline) timed alone by the"
            " runner's speed phase, median of 5 steps after 2 warm-up; infer ms: one forward pass"
            " of batch 1, median of 5 after 2 warm-up"
            + (f" (device: {', '.join(devices)}); " if devices else "; ")
            if devices
            else "Speed not measured (the runner's speed phase did not run); "
        )
        + "train min: wall time of the training command, compile and the final validation pass"
        " included, on a machine that may have been doing other work.",
        "",
        *markdown_table(rows, table),
        "",
    ]
    if spread:
        lines += seed_table(spread, highlight, experiment.eval_split)
    lines += [f"![{experiment.eval_split} mIoU against parameters and MACs](results.png)", ""]
    return "\n".join(lines)


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


def plot(points: list[dict], path: str, size: int, title: str, split: str = "test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    # A colour per architecture and a marker per encoder family, in order of appearance.
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    arches = list(dict.fromkeys(point["arch"] for point in points))
    families = list(dict.fromkeys(encoder_family(point["encoder"]) for point in points))
    colours = {arch: cycle[i % len(cycle)] for i, arch in enumerate(arches)}
    markers = {family: MARKERS[i % len(MARKERS)] for i, family in enumerate(families)}
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
            colour = colours[point["arch"]]
            marker = markers[encoder_family(point["encoder"])]
            name, y = point["name"], point["miou"]
            if name in off_scale:
                name, y, marker = f"{name}: {y:.3f}, below the axis", bottom + pad / 2, "v"
            elif point["high"] > point["low"]:  # several seeds: lowest to highest
                axis.vlines(x, point["low"], point["high"], colors=colour, lw=1.5, zorder=2)
            axis.scatter(x, y, color=colour, marker=marker, s=60, zorder=3)
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
    axes[0].set_ylabel(f"{split} mIoU (whole set)")
    legend = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=a) for a, c in colours.items()
    ] + [
        plt.Line2D([], [], color="tab:grey", marker=m, ls="", label=f"{family} encoder")
        for family, m in markers.items()
    ]
    finish_figure(figure, legend, title, path)


def curve_metric(experiment) -> str:
    return f"iou/{experiment.highlight_class}" if experiment.highlight_class else "miou"


def write_convergence(experiment, rows: list[dict], workdir: str, out: str) -> dict:
    """``convergence.md`` (each member's last-quarter gain, the criterion, steps to 95% of its
    final validation score and, where the speed phase measured the step alone, the seconds that
    takes) and ``curves.png``; returns each member's figures by name."""
    metrics = [row.get("curve_metric") or curve_metric(experiment) for row in rows]
    metric = " / ".join(dict.fromkeys(metrics))
    curves, figures = {}, {}
    lines = [
        f"# {experiment.name}: convergence",
        "",
        f"Validation {metric} at every evaluation"
        + (" (each member's checkpoint-selection metric)" if len(set(metrics)) > 1 else "")
        + ". Criterion: the best validation score "
        "(what checkpoint selection picks) gains less than "
        f"{curves_lib.CONVERGED_GAIN} over the last quarter of the budget (best gain = best of "
        "all evaluations - best up to 3/4 of the steps; final gain = last - value at 3/4). "
        "Steps to 95%: the first evaluation reaching 95% of the best; seconds: those steps "
        "times the training step timed alone by the runner's speed phase.",
        "",
        "| member | evaluations | at 3/4 | final | best | best gain | final gain | converged "
        "| steps to 95% | s/step alone | seconds to 95% |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row, member_metric in zip(rows, metrics, strict=True):
        curve = curves_lib.validation_curve(os.path.join(workdir, row["name"]), member_metric)
        curves[row["name"]] = curve
        try:
            quarter = curves_lib.last_quarter(curve, row["steps"])
        except ValueError as error:  # too few passes to judge: said in its row, not a crash
            figures[row["name"]] = {"converged": False}
            lines.append(f"| {row['name']} | {len(curve)} | cannot be judged: {error} |||||||||")
            continue
        to_95 = curves_lib.steps_to_fraction(curve)
        step_seconds = row["batch_size"] / row["train_img_per_sec"]  # NaN when not measured
        figures[row["name"]] = {**quarter, "steps_to_95": to_95, "step_seconds": step_seconds}
        lines.append(
            f"| {row['name']} | {quarter['evaluations']} | {quarter['at_three_quarters']:.4f} "
            f"| {quarter['final']:.4f} | {quarter['best']:.4f} | {quarter['best_gain']:+.4f} "
            f"| {quarter['final_gain']:+.4f} | {'yes' if quarter['converged'] else 'NO'} "
            f"| {to_95} | {cell(step_seconds, '{:.3f}')} | {cell(to_95 * step_seconds, '{:.0f}')} |"
        )
    met = sum(f["converged"] for f in figures.values())
    lines += ["", f"{met} of {len(figures)} members meet the criterion.", ""]
    with open(os.path.join(out, "convergence.md"), "w") as f:
        f.write("\n".join(lines))
    curves_lib.plot_curves(
        curves,
        os.path.join(out, "curves.png"),
        f"{experiment.name}: validation {metric}",
        f"validation {metric}",
        metrics=dict(zip((row["name"] for row in rows), metrics, strict=True)),
    )
    return figures


def class_index(directory: str, class_name: str) -> int:
    """Where ``class_name`` is in a run's class list (its config's, else its dataset record's)."""
    names = list(load_config(directory).data.class_names)
    if not names:
        record = read_dataset_record(directory)
        names = list(record.class_names) if record else []
    if class_name not in names:
        raise UserError(f"{directory}: no class {class_name!r} among {names}")
    return names.index(class_name)


def per_image_scores(experiment, rows: list[dict], workdir: str) -> dict[str, list]:
    """Model (member name without _seedN) -> each seed's per-image IoU of the highlighted class
    on the eval split, from the members' ``per_image`` records."""
    split, scores = experiment.eval_split, {}
    for row in rows:
        directory = os.path.join(workdir, row["name"])
        report = json.load(open(os.path.join(directory, f"eval_{split}.json")))
        if "per_image" not in report:
            raise UserError(
                f"{directory}/eval_{split}.json has no per_image records; re-run "
                f"segjax.evaluate --workdir {directory} --split {split}"
            )
        index = class_index(directory, experiment.highlight_class)
        values = paired.per_image_iou(report["per_image"], index)
        scores.setdefault(SEED_SUFFIX.sub("", row["name"]), []).append(values)
    return scores


def write_paired(
    experiment, rows: list[dict], workdir: str, out: str, scores=None, metric: str = ""
) -> list[dict]:
    """``paired.md``: each of the experiment's comparisons over the eval split's images, of the
    highlighted class's IoU or of the given per-image ``scores`` (model -> one array per seed)
    named ``metric``."""
    if scores is None:
        if not experiment.highlight_class:
            raise UserError(f"{experiment.name}: comparisons need a highlight_class to compare")
        scores = per_image_scores(experiment, rows, workdir)
        metric = f"{experiment.highlight_class} IoU"
    lines = [
        f"# {experiment.name}: paired tests",
        "",
        f"Per-image {metric} on the {experiment.eval_split} "
        "split, each model's seeds averaged image by image; A - B: mean of the per-image "
        "differences, its 95% bootstrap interval (BCa, 10,000 resamples, seed 0) and the "
        "two-sided Wilcoxon signed-rank p-value.",
        "",
        "| A | B | seeds A / B | images | mean A | mean B | A - B | 95% interval | p | "
        f"significant at {paired.ALPHA} |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    results, sentences = [], []
    for a, b in experiment.comparisons:
        missing = [name for name in (a, b) if name not in scores]
        if missing:
            lines.append(f"| {a} | {b} | not finished: {', '.join(missing)} |||||||")
            continue
        result = paired.compare(paired.seed_average(scores[a]), paired.seed_average(scores[b]))
        results.append({"a": a, "b": b, **result})
        lines.append(
            f"| {a} | {b} | {len(scores[a])} / {len(scores[b])} | {result['images']} "
            f"| {result['mean_a']:.4f} | {result['mean_b']:.4f} | {result['difference']:+.4f} "
            f"| [{result['low']:+.4f}, {result['high']:+.4f}] | {result['p_value']:.3g} "
            f"| {'yes' if result['significant'] else 'no'} |"
        )
        sentences.append("- " + paired.sentence(a, b, result))
    lines += ["", *sentences, ""]
    with open(os.path.join(out, "paired.md"), "w") as f:
        f.write("\n".join(lines))
    return results


def write_report(experiment_path: str, workdir: str, out: str) -> list:
    try:
        experiment = load_experiment(experiment_path)
    except ValueError as error:
        raise UserError(str(error)) from None
    if experiment.kind == "instances":
        rows = instance_report.write(experiment, workdir, out)
        if not rows:
            raise UserError(f"{workdir}: no finished member of {experiment.name} to report")
        if experiment.curves:
            write_convergence(experiment, instance_report.member_rows(rows), workdir, out)
        if experiment.comparisons:
            scores = instance_report.per_image_dsb(experiment, rows, workdir)
            write_paired(experiment, rows, workdir, out, scores, "DSB score")
        write_tables(experiment, rows, workdir, out)
        return rows
    rows = build_rows(experiment, workdir)
    if not rows:
        raise UserError(f"{workdir}: no finished member of {experiment.name} to report")
    os.makedirs(out, exist_ok=True)
    spread = seed_groups(rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(rows, experiment, spread))
    write_csv(rows, os.path.join(out, "results.csv"), leave_out=("group", "device", "eval_size"))
    if spread:
        write_seeds_csv(spread, os.path.join(out, "seeds.csv"))
    missing = len(experiment.members) - len(rows)
    plot(
        plotted_points(rows, spread),
        os.path.join(out, "results.png"),
        experiment.size,
        f"{experiment.name}: {budget_line(rows)}"
        + (f"; {missing} member{'s' * (missing > 1)} not finished" if missing else ""),
        experiment.eval_split,
    )
    if experiment.curves:
        write_convergence(experiment, rows, workdir, out)
    if experiment.comparisons:
        write_paired(experiment, rows, workdir, out)
    write_tables(experiment, rows, workdir, out)
    return rows


def write_tables(experiment, rows: list[dict], workdir: str, out: str) -> None:
    if experiment.tables:
        for name, text in experiment.tables(rows, workdir, out).items():
            with open(os.path.join(out, name), "w") as f:
                f.write(text)


def main(argv) -> int:
    (path,) = cli.positional(argv, ("experiment",))
    cli.require("workdir")
    args = flags.FLAGS
    out = args.out or args.workdir
    rows = write_report(path, args.workdir, out)
    print(open(os.path.join(out, "results.md")).read())
    print(f"wrote results.md, results.csv and results.png for {len(rows)} models in {out}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
