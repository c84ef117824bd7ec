"""Parts shared by the sweep reports (``segjax.experiments.report`` for semantic experiments,
``segjax.experiments.instance_report`` for instance ones): the row fields every report has, the
budget line, the Markdown table, the CSV file, the plots' markers, labels and frame, and a
trade-off plot (accuracy against latency, marker size)."""

import csv
import math
import re
import statistics

MARKERS = ("o", "^", "s", "D", "P", "X", "*")


def budget_line(rows: list[dict]) -> str:
    budgets = {(r["steps"], r["batch_size"], r["image_size"]) for r in rows}
    text = "; ".join(f"{s} steps of batch {b} at {i}" for s, b, i in sorted(budgets))
    return text + (" (one budget for every model)" if len(budgets) == 1 else " (budgets DIFFER)")


def cell(value, fmt: str) -> str:
    """A table cell; a figure that was not measured (no speed.json: NaN) shows as a dash."""
    return "-" if isinstance(value, float) and math.isnan(value) else fmt.format(value)


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


def plot_tradeoff(
    points: list[tuple[str, float, float, float, float]],
    path: str,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """A trade-off plot saved to ``path``: one point per (label, x, y, y's sd, size), the sd as
    an error bar, the marker's area growing with size (e.g. millions of parameters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5.5))
    for _, x, y, sd, size in points:
        axis.errorbar(x, y, yerr=sd, fmt="none", ecolor="tab:grey", capsize=3, zorder=2)
        axis.scatter(x, y, s=20 + 8 * size, alpha=0.7, zorder=3)
    if points:
        place_labels(axis, [(x, y, label) for label, x, y, _, _ in points])
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def encoder_family(encoder: str) -> str:
    """'resnet34' -> 'resnet', 'ghostnet_100' -> 'ghostnet', 'mobilenet_v2' -> 'mobilenet',
    'efficientnet_lite0' -> 'efficientnet', 'plain' -> 'plain'."""
    match = re.match(r"[a-z]+", encoder)
    return match.group() if match else encoder


def speed_fields(speed: dict) -> dict:
    """A row's speed-phase figures (``speed.json``; NaN where it was not measured)."""
    nan = float("nan")
    return {
        "train_img_per_sec": speed.get("train_img_per_sec", nan),
        "inference_ms": speed.get("inference_ms", nan),
    }


def median_measured(rows: list[dict], key: str) -> float:
    """The median of the rows' ``key`` where it was measured (not NaN); NaN if it never was."""
    measured = [row[key] for row in rows if not math.isnan(row[key])]
    return statistics.median(measured) if measured else float("nan")


def budget_fields(record: dict, config) -> dict:
    """A row's wall times (minutes) and training budget."""
    return {
        "train_minutes": record["train_seconds"] / 60,
        "eval_minutes": record["eval_seconds"] / 60,
        "steps": config.total_steps,
        "batch_size": config.batch_size,
        "image_size": "x".join(str(n) for n in config.data.image_size),
        "eval_size": "x".join(str(n) for n in config.data.get("eval_size") or ()),
    }


def scored_images(rows: list[dict], split: str) -> str:
    """How the rows' ``split`` was scored: at full size, or resized (``data.eval_size``)."""
    sizes = sorted({row.get("eval_size", "") for row in rows})
    if sizes == [""]:
        return f"the full-size `{split}` images"
    if len(sizes) == 1:
        return f"the `{split}` images resized to {sizes[0]}"
    shown = ", ".join(size or "full size" for size in sizes)
    return f"the `{split}` images at {shown} (sizes DIFFER)"


def markdown_table(rows: list[dict], table: list[tuple[str, str, str]]) -> list[str]:
    """The lines of a Markdown table: ``table`` is (row key, title, format) per column."""
    lines = [
        "| " + " | ".join(title for _, title, _ in table) + " |",
        "|---" + "|---:" * (len(table) - 1) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row[key], fmt) for key, _, fmt in table) + " |")
    return lines


def write_csv(rows: list[dict], path: str, leave_out: tuple[str, ...] = ("device",)) -> None:
    """The rows as CSV, every field but ``leave_out``, in the rows' key order."""
    rows = [{k: v for k, v in row.items() if k not in leave_out} for row in rows]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def finish_figure(figure, legend: list, title: str, path: str) -> None:
    """The reports' frame: the legend in one row below the panels, the title above, saved."""
    import matplotlib.pyplot as plt

    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=9)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
