"""Validation curves of sweep members, read from each run's ``metrics.jsonl``: whether a member
converged within its budget, and how many steps it took to get near its final score.

Convergence criterion: over the last quarter of its budget, a member's best validation score (the
one its checkpoint selection would pick) improves by less than ``CONVERGED_GAIN``; i.e.
``max over all evaluations - max over evaluations at or before 3/4 of the steps``.
"""

import json
import os

CONVERGED_GAIN = 0.005  # half a point of IoU


def validation_curve(workdir: str, metric: str) -> list[tuple[int, float]]:
    """(step, value) of every validation pass of a run, in step order; ``metric`` as the eval
    JSON names it ('iou/nucleus', 'miou'). A resumed run's repeated steps keep their last value."""
    key = f"eval/{metric}"
    values: dict[int, float] = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        for line in file:
            record = json.loads(line)
            if key in record:
                values[int(record["step"])] = float(record[key])
    return sorted(values.items())


def last_quarter(curve: list[tuple[int, float]], total_steps: int) -> dict:
    """The convergence figures of one curve: the best-so-far gain over the last quarter of
    ``total_steps``, the last value minus the value at three quarters, and the verdict."""
    if len(curve) < 2:
        raise ValueError(f"a convergence check needs at least 2 validation passes, got {curve}")
    quarter = 0.75 * total_steps
    before = [value for step, value in curve if step <= quarter]
    if not before:
        raise ValueError(f"no validation pass at or before step {quarter:g}")
    best_gain = max(value for _, value in curve) - max(before)
    return {
        "evaluations": len(curve),
        "at_three_quarters": before[-1],
        "final": curve[-1][1],
        "best": max(value for _, value in curve),
        "best_gain": best_gain,
        "final_gain": curve[-1][1] - before[-1],
        "converged": best_gain < CONVERGED_GAIN,
    }


def steps_to_fraction(curve: list[tuple[int, float]], fraction: float = 0.95) -> int:
    """The first evaluated step whose value reaches ``fraction`` of the curve's best value: the
    score of the checkpoint a run delivers (selection keeps the best), not of its last step,
    which on an erratic curve can lie far below it."""
    target = fraction * max(value for _, value in curve)
    return next(step for step, value in curve if value >= target)


def plot_curves(
    curves: dict[str, list[tuple[int, float]]],
    path: str,
    title: str,
    ylabel: str,
    metrics: dict[str, str] | None = None,
):
    """``curves_figure`` written to ``path``."""
    import matplotlib.pyplot as plt

    figure = curves_figure(curves, title, ylabel, metrics)
    figure.savefig(path, dpi=90)
    plt.close(figure)


# Characters of the suptitle per inch of figure width (12 pt text), with room to spare.
TITLE_CHARACTERS_PER_INCH = 10


def curves_figure(
    curves: dict[str, list[tuple[int, float]]],
    title: str,
    ylabel: str,
    metrics: dict[str, str] | None = None,
):
    """One panel per model (members differing only in seed share a panel, one line per seed),
    the last quarter of the budget shaded; the title wrapped to the figure's width (a sweep of
    one model makes a figure one panel wide).

    ``metrics`` names each member's validation metric where they differ (a Mask R-CNN's DSB
    score beside a U-Net's IoU): panels of one metric share their y-range, and each panel is
    labelled with its own metric instead of ``ylabel``.
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segjax.experiments.seeds import SEED_SUFFIX

    metrics = metrics or {}
    mixed = len(set(metrics.get(name) for name in curves)) > 1
    panels: dict[str, list[str]] = {}
    for name in curves:
        panels.setdefault(SEED_SUFFIX.sub("", name), []).append(name)
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(4 * columns, 3 * rows),
        squeeze=False,
        sharey=not mixed,
        layout="constrained",  # unlike tight_layout, leaves room for the suptitle
    )
    # Explicit limits on both ends, one range per metric: with shared axes, a bottom-only limit
    # let the top clip the best (last) points, the ones the convergence criterion is about.
    limits: dict[str | None, tuple[float, float]] = {}
    for metric in set(metrics.get(name) for name in curves):
        values = [v for n, c in curves.items() if metrics.get(n) == metric for _, v in c]
        limits[metric] = (
            (max(0.0, min(values) - 0.02), max(values) + 0.01) if values else (0.0, 1.0)
        )
    for axis, (panel, names) in zip(axes.flat, panels.items(), strict=False):
        last = max(step for name in names for step, _ in curves[name])
        axis.axvspan(0.75 * last, last, color="tab:grey", alpha=0.15, lw=0)
        for name in names:
            steps, scores = zip(*curves[name], strict=True)
            label = name[len(panel) :].lstrip("_") or name
            axis.plot(steps, scores, marker=".", lw=1, label=label)
        axis.set_title(panel, fontsize=9)
        axis.set_ylim(*limits[metrics.get(names[0])])
        axis.grid(True, alpha=0.3)
        if mixed:
            axis.set_ylabel(f"validation {metrics.get(names[0])}")
        if names != [panel]:  # a panel of one unseeded member is named by its title
            axis.legend(fontsize=7, loc="lower right")
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    if not mixed:
        for axis in axes[:, 0]:
            axis.set_ylabel(ylabel)
    for column in range(columns):  # the lowest panel of each column, above any empty cells
        axes[(len(panels) - 1 - column) // columns, column].set_xlabel("step")
    width = figure.get_figwidth() * TITLE_CHARACTERS_PER_INCH
    figure.suptitle(textwrap.fill(title + " (grey: the last quarter of the budget)", int(width)))
    return figure
