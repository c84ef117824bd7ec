"""``per_image.csv``: one row per image of an evaluated split, worst first, the table a user sorts
to find where a model fails (``segjax.evaluate`` writes it beside ``eval_<split>.json``).

Semantic runs: each class's IoU and Dice in that image (blank where the class is in neither the
truth nor the prediction: nothing to score) and their mean over the scored classes, the sort key.
Instance runs: the DSB score (objects scoring at least the threshold), the DSB score of all
objects, and the true and predicted object counts; sorted by the DSB score.
"""

import csv
import io

import numpy as np


def semantic_rows(records: list[dict], class_names: list[str], sizes: dict[int, tuple]) -> list:
    """Rows of ``evaluate.image_records``' records (each with its confusion matrix)."""
    rows = []
    for record in records:
        confusion = np.asarray(record["confusion"], np.float64)
        tp = np.diag(confusion)
        fp, fn = confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp
        scored = tp + fp + fn > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(scored, tp / (tp + fp + fn), np.nan)
            dice = np.where(scored, 2 * tp / (2 * tp + fp + fn), np.nan)
        height, width = sizes[record["index"]]
        row = {"name": record["name"], "size": f"{height}x{width}"}
        row["mean_iou"] = float(np.nanmean(iou)) if scored.any() else float("nan")
        for name, i, d in zip(class_names, iou, dice, strict=True):
            row[f"iou/{name}"], row[f"dice/{name}"] = float(i), float(d)
        rows.append(row)
    return sorted(rows, key=lambda r: (_key(r["mean_iou"]), r["name"]))


def instance_rows(records: list[dict], sizes: dict[str, tuple]) -> list:
    """Rows of ``instances.score``'s per-image records."""
    rows = []
    for record in records:
        height, width = sizes[record["name"]]
        rows.append(
            {
                "name": record["name"],
                "size": f"{height}x{width}",
                "dsb_score": record["dsb_score"],
                "dsb_score_all": record["dsb_score_all"],
                "true_objects": record["true_objects"],
                "predicted_objects": record["predicted_objects"],
            }
        )
    return sorted(rows, key=lambda r: (_key(r["dsb_score"]), r["name"]))


def _key(value: float) -> float:
    return float("inf") if np.isnan(value) else value  # unscorable images last


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: "" if isinstance(v, float) and np.isnan(v) else _cell(v) for k, v in row.items()}
        )
    return buffer.getvalue()


def _cell(value):
    return f"{value:.6f}" if isinstance(value, float) else value
