"""Seed spread: members of a sweep that differ only in ``seed`` are one model run several times;
their mean, standard deviation and range say which gaps between models exceed run-to-run noise."""

import json
import re
import statistics

SEED_SUFFIX = re.compile(r"_seed\d+$")

# (row key, column title) of the metrics summarised over seeds.
METRICS = [
    ("miou", "{split} mIoU (set)"),
    ("image_miou", "{split} mIoU (per image)"),
    ("dice", "{split} Dice (set)"),
    ("image_dice", "{split} Dice (per image)"),
    ("highlight_iou", "{split} {highlight} IoU (set)"),  # the experiment's highlighted class
]
SPREAD_FIELDS = ("mean", "sd", "min", "max")


def group_key(config: str, overrides: dict) -> str:
    """What a run is apart from its seed: the config file and every other override."""
    rest = {k: v for k, v in overrides.items() if k != "seed"}
    return config + " " + json.dumps(rest, sort_keys=True, default=str)


def seed_groups(rows: list[dict]) -> list[dict]:
    """One summary per model run with two or more seeds, in the rows' order. Each row needs
    ``name``, ``group`` (its ``group_key``), ``seed`` and the ``METRICS`` keys."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    summaries = []
    for group, members in groups.items():
        if len(members) < 2:
            continue
        summary = {
            "group": group,
            "name": SEED_SUFFIX.sub("", members[0]["name"]),
            "seeds": sorted(m["seed"] for m in members),
        }
        for key, _ in METRICS:
            values = [m.get(key, float("nan")) for m in members]
            summary[key] = {
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values),  # sample standard deviation (n - 1)
                "min": min(values),
                "max": max(values),
            }
        summaries.append(summary)
    return summaries


def seed_table(
    summaries: list[dict], highlight: str | None = None, split: str = "test"
) -> list[str]:
    """Markdown lines: mean +- sd [min, max] of each metric, one row per model (the highlighted
    class's IoU when the experiment names one)."""
    metrics = [(k, t.format(highlight=highlight, split=split)) for k, t in METRICS]
    metrics = [(k, t) for k, t in metrics if k != "highlight_iou" or highlight]
    header = ["model", "seeds"] + [title for _, title in metrics]
    lines = [
        "## Seed spread",
        "",
        "Members that differ only in their seed: mean +- sample standard deviation [min, max].",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---" + "|---:" * len(metrics) + "|",
    ]
    for summary in summaries:
        cells = [summary["name"], ",".join(str(s) for s in summary["seeds"])]
        for key, _ in metrics:
            s = summary[key]
            cells.append(f"{s['mean']:.4f} +- {s['sd']:.4f} [{s['min']:.4f}, {s['max']:.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]
