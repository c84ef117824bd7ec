"""The report of an instance segmentation sweep (``Experiment(kind='instances')``), written by
``segjax.experiments.report``: ``results.md``, ``results.csv`` and ``results.png``.

One row per finished member, and for a semantic member evaluated with several ``--instances``
methods one row per method: the DSB 2018 score and COCO mask AP / AP50 / AP75 on the eval split,
objects per image (predicted, true), parameters and GMACs at the experiment's size (from shapes
alone; Mask R-CNN's include its heads on every one of its proposal and detection slots, which
its static shapes compute, so the encoder and pyramid's GMACs get a column of their own),
training images/s and batch-1 inference latency (the runner's speed phase), the evaluation's
wall time per image and its host post-processing part (pasting masks, or the watershed), and
wall times. The plot puts the DSB score against the encoder and pyramid's GMACs and against
training speed.
"""

import json
import math
import os

import numpy as np

from segjax.errors import UserError
from segjax.experiments.records import collect, read_speed
from segjax.experiments.report_parts import (
    budget_fields,
    budget_line,
    encoder_family,
    finish_figure,
    markdown_table,
    place_labels,
    speed_fields,
    write_csv,
)
from segjax.experiments.seeds import SEED_SUFFIX
from segjax.model_config import model_from_config
from segjax.models.counting import summarize
from segjax.runs import load_config

COLUMNS = [
    ("name", "model", "{}"),
    ("params", "params", "{:,}"),
    ("gmacs", "GMACs@{size}", "{:.2f}"),
    ("trunk_gmacs", "encoder+pyramid GMACs", "{:.2f}"),
    ("dsb_score", "DSB score", "{:.4f}"),
    ("dsb_score_all", "DSB (all objects)", "{:.4f}"),
    ("mask_ap", "mask AP", "{:.4f}"),
    ("mask_ap50", "AP50", "{:.4f}"),
    ("mask_ap75", "AP75", "{:.4f}"),
    ("objects", "objects/image (true)", "{}"),
    ("train_img_per_sec", "train img/s", "{:.1f}"),
    ("inference_ms", "infer ms b1@{size}", "{:.1f}"),
    ("eval_ms", "eval ms/image", "{:.1f}"),
    ("post_ms", "post ms/image", "{:.1f}"),
    ("train_minutes", "train min", "{:.1f}"),
    ("eval_minutes", "eval min", "{:.1f}"),
]


# Row fields for the report's own use (curves, paired tests), not for the tables.
INTERNAL = ("device", "eval_size", "member", "prefix", "curve_metric")


def member_rows(rows: list[dict]) -> list[dict]:
    """One row per trained member (a U-Net's methods share one), named by its directory: what
    convergence is judged on, each by its own checkpoint-selection metric (Mask R-CNN's
    validation DSB score, a U-Net's its ``best_metric``)."""
    members = {}
    for row in rows:
        members.setdefault(row["member"], {**row, "name": row["member"]})
    return list(members.values())


def per_image_dsb(experiment, rows: list[dict], workdir: str) -> dict[str, list]:
    """Model (row name without _seedN) -> each seed's per-image DSB score on the eval split, in
    the split's order, from the members' evaluation records (one list per method)."""
    split, scores = experiment.eval_split, {}
    for row in rows:
        path = os.path.join(workdir, row["member"], f"eval_{split}.json")
        with open(path) as file:
            records = json.load(file).get(f"{row['prefix']}per_image")
        if records is None:
            raise UserError(
                f"{path} has no {row['prefix']}per_image records; re-run segjax.evaluate"
            )
        values = np.array([record["dsb_score"] for record in records], np.float64)
        scores.setdefault(SEED_SUFFIX.sub("", row["name"]), []).append(values)
    return scores


def _method_prefixes(record: dict, split: str) -> list[tuple[str, str]]:
    """(key prefix, method) of each instance evaluation in a member's record."""
    first = record.get(f"{split}/method")
    found = [("", first)]
    for key in record:
        if key.startswith(f"{split}/") and key.endswith("/dsb_score") and key.count("/") == 2:
            found.append((key.split("/")[1] + "/", key.split("/")[1]))
    return found


def _minor_tick(value: float, _) -> str:
    """Labels 2, 3 and 5 times a power of ten only: all nine crowd a short log axis."""
    leading = f"{value:.0e}"[0]
    return f"{value:g}" if leading in "235" else ""


def model_figures(config, size: int) -> tuple[int, int, int]:
    """(parameters, MACs, MACs of the encoder and pyramid alone) at size x size: Mask R-CNN's
    heads run on a fixed number of boxes, so its trunk is what compares with a U-Net's encoder
    and decoder (whose trunk is the whole model)."""
    channels = int(config.data.channels)
    model = model_from_config(config.model, config.data.num_classes or 2, channels)
    summary = summarize(model, (1, size, size, channels))
    if config.model.arch != "maskrcnn":
        return summary.params, summary.macs, summary.macs
    trunk = sum(
        layer.macs for layer in summary.layers if layer.path.split("/")[0] in ("encoder", "pyramid")
    )
    return summary.params, summary.macs, trunk


def build_rows(experiment, workdir: str) -> list[dict]:
    split, size, nan = experiment.eval_split, experiment.size, float("nan")
    rows = []
    for record in collect(experiment, workdir):
        directory = os.path.join(workdir, record["name"])
        config = load_config(directory)
        params, macs, trunk = model_figures(config, size)
        speed = read_speed(directory, size) or {}
        for prefix, method in _method_prefixes(record, split):

            def get(key, prefix=prefix, record=record):
                return record.get(f"{split}/{prefix}{key}", nan)

            name = record["name"]
            if method:  # unet_x_watershed_seed1 -> unet_x_<method>_seed1
                seed = SEED_SUFFIX.search(name)
                base = SEED_SUFFIX.sub("", name).replace("_watershed", "")
                name = base + f"_{method}" + (seed.group(0) if seed else "")
            arch = config.model.arch
            rows.append(
                {
                    "name": name,
                    "member": record["name"],
                    "prefix": prefix,
                    "curve_metric": config.best_metric,
                    "arch": f"{arch}/{config.model.pyramid}" if arch == "maskrcnn" else arch,
                    "method": method or "detection",
                    "encoder": config.model.encoder,
                    "params": params,
                    "gmacs": macs / 1e9,
                    "trunk_gmacs": trunk / 1e9,
                    "dsb_score": get("dsb_score"),
                    "dsb_score_all": get("dsb_score_all"),
                    "mask_ap": get("mask_ap"),
                    "mask_ap50": get("mask_ap50"),
                    "mask_ap75": get("mask_ap75"),
                    "objects": f"{get('predicted_objects_per_image'):.1f} "
                    f"({get('true_objects_per_image'):.1f})",
                    **speed_fields(speed),
                    "eval_ms": get("seconds_per_image") * 1000,
                    "post_ms": get("post_seconds_per_image") * 1000,
                    "device": speed.get("device", ""),
                    **budget_fields(record, config),
                }
            )
    return rows


def markdown(rows: list[dict], experiment) -> str:
    size = experiment.size
    table = [(key, title.format(size=size), fmt) for key, title, fmt in COLUMNS]
    devices = sorted({row["device"] for row in rows if row["device"]})
    lines = [
        f"# {experiment.name}: results",
        "",
        f"Training budget: {budget_line(rows)}. Scored on the full-size `{experiment.eval_split}`"
        " images: the DSB 2018 score (per image, the mean over IoU thresholds 0.5:0.05:0.95 of"
        " TP / (TP + FP + FN), averaged over images) of the objects scoring at least 0.5, and"
        " of all objects; COCO mask AP / AP50 / AP75 (pycocotools, class-agnostic, up to 1000"
        " objects per image) of all objects ranked by score; objects per image of the first"
        " (score >= 0.5).",
        "GMACs: one forward pass at batch 1 from shapes alone (Mask R-CNN's include its RoI"
        " heads on all of its proposal and detection slots, whatever the image holds);"
        " encoder+pyramid GMACs: the encoder and the feature pyramid alone (a U-Net's whole"
        " model); train img/s and infer ms: the runner's speed phase,"
        " median of 5 after 2 warm-up"
        + (f" (device: {', '.join(devices)})" if devices else " (not measured)")
        + "; eval ms/image: the evaluation loop's wall time per test image (model at full size,"
        " compiles included, and post-processing); post ms/image: the host's part of it (masks"
        " pasted into a label map, or the watershed / connected components). The semantic rows"
        " of one U-Net share its model, params, speed and training.",
        "",
        *markdown_table(rows, table),
    ]
    lines += ["", "![DSB score against encoder+pyramid GMACs and training speed](results.png)", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: str, size: int, title: str, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    kinds = list(dict.fromkeys(f"{r['arch']} {r['method']}" for r in rows))
    colours = {kind: cycle[i % len(cycle)] for i, kind in enumerate(kinds)}
    markers = {"resnet": "o", "ghostnet": "^"}
    figure, axes = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
    for axis, key, label in (
        (axes[0], "trunk_gmacs", f"encoder + pyramid GMACs per {size}x{size} image (log scale)"),
        (axes[1], "train_img_per_sec", "training images/s (log scale)"),
    ):
        labels = []
        for row in rows:
            x, y = row[key], row["dsb_score"]
            if isinstance(x, float) and math.isnan(x):
                continue
            axis.scatter(
                x,
                y,
                c=colours[f"{row['arch']} {row['method']}"],
                marker=markers.get(encoder_family(row["encoder"]), "s"),
                s=60,
                zorder=3,
            )
            labels.append((x, y, row["name"]))
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(ticker.FuncFormatter(_minor_tick))
        axis.margins(x=0.15, y=0.1)
        place_labels(axis, labels)
        axis.set_xlabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"DSB 2018 score ({split} split)")
    legend = [plt.Line2D([], [], color=c, marker="o", ls="", label=k) for k, c in colours.items()]
    legend += [
        plt.Line2D([], [], color="tab:grey", marker=m, ls="", label=f"{f} encoder")
        for f, m in markers.items()
    ]
    finish_figure(figure, legend, title, path)


def write(experiment, workdir: str, out: str) -> list[dict]:
    rows = build_rows(experiment, workdir)
    if not rows:
        return rows
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(rows, experiment))
    write_csv(rows, os.path.join(out, "results.csv"), leave_out=INTERNAL)
    missing = len(experiment.members) - len(
        {r["name"] for r in rows if r["method"] != "components"}
    )
    plot(
        rows,
        os.path.join(out, "results.png"),
        experiment.size,
        f"{experiment.name}: {budget_line(rows)}"
        + (f"; {missing} member{'s' * (missing > 1)} not finished" if missing > 0 else ""),
        experiment.eval_split,
    )
    return rows
