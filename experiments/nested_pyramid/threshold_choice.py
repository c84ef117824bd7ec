"""Chooses a Mask R-CNN run's detection NMS threshold and DSB score threshold on the validation
split, never the test split: the DSB score counts every object kept, so both settings move it.

    W=runs/nested_tuning
    python experiments/nested_pyramid/threshold_choice.py \\
        --workdirs $W/maskrcnn_fpn_resnet18_adamw1e-3,$W/maskrcnn_unetpp_resnet18_adamw1e-3 \\
        --out experiments/nested_pyramid/tuning/thresholds.md

For each run and each ``--nms`` value (``model.detection_nms_threshold``: detections of one class
overlapping more than this are suppressed), one pass of the model over the validation images;
then each ``--scores`` value scored on the host as ``segjax.evaluate --score_threshold`` scores it
(objects scoring at least the threshold count for the DSB score; mask AP ranks all of them).
Writes a table of validation DSB score and mask AP per setting and each run's best setting, with
what applies it (the grid's ``THRESHOLDS`` entry).

The study needs the run's checkpoint, which a lent machine cannot send back (``device.sh`` runs
it there, into each Mask R-CNN member's ``thresholds_validation.json``, packed with its
records). ``--records`` builds the table from such files instead of from runs:

    M=experiments/nested_pyramid/tuning/members
    python experiments/nested_pyramid/threshold_choice.py \
        --records $M/maskrcnn_fpn_resnet18_adamw1e-3/thresholds_validation.json,... \
        --out experiments/nested_pyramid/tuning/thresholds.md
"""

import dataclasses
import itertools
import json
import os

from absl import flags

from segjax import cli
from segjax.errors import UserError
from segjax.instances import image_records, jit_instances, mask_ap, predict_instances, split_metrics
from segjax.models import is_instance_model
from segjax.runs import restore_for_evaluation
from segjax.workdir import write_atomically


def define_flags() -> None:
    flags.DEFINE_list("workdirs", None, "Mask R-CNN runs (comma-separated)")
    flags.DEFINE_list("records", None, "instead of runs: the .json of earlier studies' --out")
    flags.DEFINE_string("split", "validation", "the split the choice is made on")
    # The first tuning run studied 0.1 to 0.7: best at 0.2 (validation DSB 0.5106), 0.1 and 0.3
    # within 0.0014 of it, 0.6 and 0.7 at 0.5002 and 0.4873 (its thresholds_validation.md).
    flags.DEFINE_list("nms", ["0.1", "0.2", "0.3", "0.4", "0.5"], "detection NMS IoU thresholds")
    # The second was best at the then-last score threshold, 0.9 (validation DSB 0.5502, against
    # 0.5492 at 0.8), so 0.95 was added; a best at an end of either range is flagged (edges()).
    flags.DEFINE_list(
        "scores",
        ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "0.95"],
        "DSB score thresholds",
    )
    flags.DEFINE_integer("min_area", 1, "objects of fewer pixels are dropped")
    flags.DEFINE_string("out", None, "a Markdown file for the table (and its .json)")


def with_nms(run, threshold: float):
    """The run with its model's detection NMS threshold replaced (the same variables)."""
    settings = dataclasses.replace(run.model.settings, detection_nms_threshold=threshold)
    return dataclasses.replace(run, model=run.model.clone(settings=settings))


def study(workdir: str, split: str, nms: list[float], scores: list[float], min_area: int):
    """One row per (NMS threshold, score threshold): its metrics on ``split``."""
    run, state, step = restore_for_evaluation(workdir)
    if not is_instance_model(run.model):
        raise UserError(f"{workdir} is a {run.config.model.arch} run; this study is for Mask R-CNN")
    name = os.path.basename(os.path.normpath(workdir))
    print(f"{workdir}: step {step}")
    rows = []
    for threshold in nms:
        variant = with_nms(run, threshold)
        fn = jit_instances(variant)
        images = list(predict_instances(fn, state, variant, split, None, min_area))
        ap = None  # ranks every object: the same at every score threshold
        for cut in scores:
            records = image_records(images, cut)
            ap = ap or mask_ap(images, records)
            metrics = split_metrics(images, records, cut, ap)
            rows.append(
                {
                    "run": name,
                    "nms": threshold,
                    "score_threshold": cut,
                    **{k: metrics[k] for k in ("dsb_score", "mask_ap", "mask_ap50")},
                    "objects": metrics["predicted_objects_per_image"],
                    "true_objects": metrics["true_objects_per_image"],
                }
            )
            print(f"  nms {threshold:g}, score {cut:g}: DSB {metrics['dsb_score']:.4f}")
    return rows


def best_of(rows: list[dict], run: str) -> dict:
    """The run's setting of highest DSB score; ties go to the first (lowest NMS, then score)."""
    return max((r for r in rows if r["run"] == run), key=lambda r: r["dsb_score"])


def edges(rows: list[dict], run: str, best: dict) -> list[str]:
    """The settings of ``best`` at an end of the range studied for ``run``: a choice there may
    have a better value beyond it, so the range should be widened before it is used."""
    found = []
    for key, flag in (("nms", "--nms"), ("score_threshold", "--scores")):
        values = {r[key] for r in rows if r["run"] == run}
        if len(values) > 1 and best[key] in (min(values), max(values)):
            found.append(f"{flag} {best[key]:g}")
    return found


def table(rows: list[dict], split: str) -> str:
    lines = [
        f"| run | NMS | score threshold | {split} DSB | mask AP | AP50 | objects/img (true) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in dict.fromkeys(row["run"] for row in rows):
        best = best_of(rows, run)
        for row in (r for r in rows if r["run"] == run):
            dsb = f"{row['dsb_score']:.4f}"
            lines.append(
                f"| {row['run']} | {row['nms']:g} | {row['score_threshold']:g} "
                f"| {f'**{dsb}**' if row is best else dsb} | {row['mask_ap']:.4f} "
                f"| {row['mask_ap50']:.4f} | {row['objects']:.1f} ({row['true_objects']:.1f}) |"
            )
    lines.append("")
    for run in dict.fromkeys(row["run"] for row in rows):
        best = best_of(rows, run)
        at_end = edges(rows, run, best)
        lines.append(
            f"- {run}: best by {split} DSB {best['dsb_score']:.4f}: NMS {best['nms']:g}, score "
            f"threshold {best['score_threshold']:g} (THRESHOLDS entry "
            f"`({best['nms']:g}, {best['score_threshold']:g})`)"
            + (f"; AT AN END of the studied {', '.join(at_end)}: widen it first" if at_end else "")
        )
    return "\n".join(lines) + "\n"


ROW_KEYS = (
    "run",
    "nms",
    "score_threshold",
    "dsb_score",
    "mask_ap",
    "mask_ap50",
    "objects",
    "true_objects",
)


def read_records(paths: list[str]) -> list[dict]:
    """The rows of earlier studies, in the order given, or a UserError naming the file."""
    rows = []
    for path in paths:
        try:
            with open(path) as file:
                found = json.load(file)
        except (OSError, ValueError) as error:
            raise UserError(f"--records: {path}: {error}") from None
        if not isinstance(found, list) or not found:
            raise UserError(f"--records: {path}: not a list of study rows")
        for row in found:
            missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
            if missing:
                raise UserError(f"--records: {path}: a row without {', '.join(missing)}")
        rows += found
    return rows


def _fractions(name: str, values: list[str]) -> list[float]:
    """A list flag's entries as numbers in (0, 1), or a UserError naming the flag."""
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        raise UserError(f"--{name}={','.join(values)}: entries must be numbers") from None
    if not numbers or not all(0 < n < 1 for n in numbers):
        raise UserError(f"--{name}={','.join(values)}: give one or more numbers in (0, 1)")
    return numbers


def main(argv) -> int:
    cli.positional(argv)
    args = flags.FLAGS
    if bool(args.workdirs) == bool(args.records):
        raise UserError("give either --workdirs (runs to study) or --records (earlier studies)")
    if args.records:
        rows = read_records(args.records)
    else:
        nms, scores = _fractions("nms", args.nms), _fractions("scores", args.scores)
        for workdir in args.workdirs:
            if not os.path.isdir(workdir):
                raise UserError(f"--workdirs: {workdir}: no such run directory")
        rows = list(
            itertools.chain.from_iterable(
                study(w, args.split, nms, scores, args.min_area) for w in args.workdirs
            )
        )
    text = table(rows, args.split)
    print("\n" + text)
    if args.out:
        write_atomically(args.out, text)
        write_atomically(os.path.splitext(args.out)[0] + ".json", json.dumps(rows, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
