"""Evaluates a trained run: ``python -m segjax.evaluate --workdir runs/x [--split test]``.

Restores the best checkpoint by the run's ``best_metric`` (or ``--checkpoint latest`` / a step),
evaluates the split with the run's config, prints a table, writes ``WORKDIR/eval_<split>.json``
and PNGs of a few predictions beside their ground truth in ``WORKDIR/predictions_<split>/``.

Instance segmentation (``segjax.instances``): a Mask R-CNN run is scored with the DSB 2018 metric
and COCO mask AP; a semantic run is too with ``--instances watershed`` (or ``components``, or
both, comma-separated: the first gives the headline keys, the others ``<method>/<key>``), its
foreground split into objects. The JSON then also holds one record per image (DSB score, true
and predicted object counts) and the host post-processing time per image, and the PNGs show the
image, the true objects and the predicted ones (those scoring at least 0.5, which the DSB score
counts; mask AP counts every object, ranked by score: ``segjax/instances.py``).
"""

import json
import os
import time

import jax
import numpy as np
from absl import flags
from PIL import Image

from segjax import cli, per_image_table
from segjax import metrics as metrics_lib
from segjax.data.augment import resize
from segjax.detection.label_maps import SPLITTERS
from segjax.errors import UserError
from segjax.files import write_atomically
from segjax.instances import SCORE_THRESHOLD, Splitter, jit_instances, predict_instances, score
from segjax.models import is_instance_model
from segjax.reporting import describe_metrics
from segjax.runs import (
    checkpoint_label,
    dataset_record,
    eval_batches,
    jit_predict,
    restore_for_evaluation,
)
from segjax.scoring import jit_eval_step
from segjax.visualize import colourise, denormalise, instance_overlay, side_by_side
from segjax.workdir import read_dataset_record, write_dataset_record


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the run's directory")
    flags.DEFINE_string("split", "test", "train, validation or test")
    flags.DEFINE_string(
        "checkpoint",
        "best",
        "best (by the run's best_metric), latest, or a step number; an unreadable best or "
        "latest checkpoint is reported and the next one used",
    )
    flags.DEFINE_integer("num_images", 6, "predictions to save as PNGs")
    flags.DEFINE_list(
        "instances",
        [],
        "for a semantic run: score it as instance segmentation, its foreground split into "
        f"objects by {' or '.join(SPLITTERS)} (comma-separated for several)",
    )
    flags.DEFINE_float(
        "seed_height",
        2.0,
        "watershed: least height of a seed (h-maxima of the distance transform, in pixels)",
    )
    flags.DEFINE_integer(
        "min_area", 1, "objects of fewer pixels are dropped (Mask R-CNN runs and --instances)"
    )
    flags.DEFINE_float(
        "score_threshold",
        SCORE_THRESHOLD,
        "instance runs: the DSB score counts the objects scoring at least this (mask AP ranks "
        "them all)",
    )


def format_table(results: dict[str, float], class_names) -> str:
    """Per class and mean: IoU and Dice pooled over the split's pixels, and averaged over images."""
    lines = [
        f"{'':<20} {'whole split':>17} {'mean over images':>19}",
        f"{'class':<20} {'IoU':>8} {'Dice':>8} {'IoU':>9} {'Dice':>9}",
    ]
    rows = [(name, f"/{name}") for name in class_names] + [("mean", None)]
    for name, suffix in rows:
        keys = ("iou", "dice") if suffix else ("miou", "dice")
        pooled = [results[k + (suffix or "")] for k in keys]
        image = [results["image_" + k + (suffix or "")] for k in keys]
        lines.append(
            f"{name:<20} {pooled[0]:8.4f} {pooled[1]:8.4f} {image[0]:9.4f} {image[1]:9.4f}"
        )
    lines.append(
        f"pixel accuracy {results['pixel_accuracy']:.4f}, precision "
        f"{results['precision']:.4f}, recall {results['recall']:.4f} "
        f"({results['images']} images)"
    )
    return "\n".join(lines)


def image_records(confusions: np.ndarray, indices: np.ndarray, source) -> list[dict]:
    """One record per image of the split, in the split's order: its name and its confusion
    matrix (rows true classes, columns predicted), so that paired tests over images and other
    poolings (per batch, per image) can be computed later without the model."""
    records = [
        {"index": int(index), "name": source[int(index)]["name"], "confusion": c.tolist()}
        for c, index in zip(confusions, indices, strict=True)
        if index >= 0
    ]
    return sorted(records, key=lambda record: record["index"])


def _instance_png(run, image_dir: str, result, source) -> None:
    example = source[result.index]
    image = example["image"]
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    eval_size = tuple(run.config.data.eval_size) or None
    if eval_size:
        image = resize(image, example["mask"], eval_size)[0]
    panels = [
        image,
        instance_overlay(image, result.true),
        instance_overlay(image, result.confident()),
    ]
    name = result.name.replace("/", "_")
    Image.fromarray(side_by_side(panels)).save(os.path.join(image_dir, f"{name}.png"))


def evaluate_instance_run(
    workdir: str, split: str, which: str, num_images: int, methods: list[str], options: dict
) -> dict:
    """The instance evaluation (module docstring)."""
    run, state, step = restore_for_evaluation(workdir, which)
    if not run.dataset.has_instances:
        raise UserError(
            f"dataset {run.dataset.name!r} has no instance maps to score against (a folder "
            "dataset needs an instances/ folder)"
        )
    source = run.dataset.split(split)
    detector = is_instance_model(run.model)
    if detector and methods:
        raise UserError(
            f"--instances={','.join(methods)}: only for semantic runs; "
            f"{workdir} is a {run.config.model.arch} run, which finds objects itself"
        )
    image_dir = os.path.join(workdir, f"predictions_{split}")
    os.makedirs(image_dir, exist_ok=True)
    which = checkpoint_label(workdir, which, step)
    report = {"split": split, "step": step, "checkpoint": which, "examples": len(source)}
    saved = 0
    for position, method in enumerate(methods or [None]):
        splitter = (
            None
            if detector
            else Splitter(method, min_area=options["min_area"], seed_height=options["seed_height"])
        )
        fn = jit_instances(run, splitter)
        results, start = [], time.perf_counter()
        min_area = options.get("min_area", 1)
        for result in predict_instances(fn, state, run, split, splitter, min_area):
            results.append(result)
            if position == 0 and saved < num_images and jax.process_index() == 0:
                _instance_png(run, image_dir, result, source)
                saved += 1
        seconds = time.perf_counter() - start
        metrics, records = score(results, options.get("score_threshold", SCORE_THRESHOLD))
        prefix = "" if position == 0 else f"{method}/"
        if position == 0:
            sizes = {r.name: r.true.shape for r in results}
            table = write_per_image(workdir, split, per_image_table.instance_rows(records, sizes))
        report.update({prefix + k: v for k, v in metrics.items()})
        report[prefix + "seconds_per_image"] = seconds / len(results)
        report[prefix + "per_image"] = records
        if method:
            report[prefix + "method"] = method
        label = f"{run.config.model.arch} + {method}" if method else run.config.model.arch
        print(f"{label}: {describe_metrics(metrics)}")
    if jax.process_index() == 0:
        write_atomically(
            os.path.join(workdir, f"eval_{split}.json"),
            json.dumps(report, indent=2, sort_keys=True),
        )
    print(
        f"\nwrote {os.path.join(workdir, f'eval_{split}.json')} and {table} and {saved} PNGs in "
        f"{image_dir} (image | true objects | predicted objects)"
    )
    return report


def evaluate_run(
    workdir: str, split: str, which: str, num_images: int, options: dict | None = None
) -> dict:
    run, state, step = restore_for_evaluation(workdir, which)
    config = run.config
    if jax.process_index() == 0 and read_dataset_record(workdir) is None:
        write_dataset_record(workdir, dataset_record(run))  # a workdir from before the records
    if is_instance_model(run.model):
        return evaluate_instance_run(workdir, split, which, num_images, [], options or {})
    source = run.dataset.split(split)  # a missing or empty split: one line naming it
    p_eval, p_predict = jit_eval_step(run), jit_predict(run)

    per_image, indices, saved = [], [], 0
    image_dir = os.path.join(workdir, f"predictions_{split}")
    os.makedirs(image_dir, exist_ok=True)
    for batch, global_batch in eval_batches(run, split):
        per_image.append(np.asarray(p_eval(state, global_batch).addressable_data(0)))
        indices.append(np.asarray(batch["index"]))
        if saved < num_images and jax.process_index() == 0:
            predictions = np.asarray(p_predict(state, global_batch["image"]).addressable_data(0))
            for row, index in enumerate(batch["index"][: len(predictions)]):
                if index < 0 or saved >= num_images:
                    continue
                height, width = source[int(index)]["mask"].shape
                valid = batch["valid"][row][:height, :width]
                panels = [
                    denormalise(
                        batch["image"][row][:height, :width],
                        tuple(config.data.mean),
                        tuple(config.data.std),
                    ),
                    colourise(batch["label"][row][:height, :width], valid),
                    colourise(predictions[row][:height, :width]),
                ]
                name = source[int(index)]["name"].replace("/", "_")
                Image.fromarray(side_by_side(panels)).save(os.path.join(image_dir, f"{name}.png"))
                saved += 1
    class_names = list(run.dataset.class_names)
    per_image = np.concatenate(per_image)
    results = {
        **metrics_lib.summarize(per_image.sum(axis=0), class_names),
        **metrics_lib.summarize_per_image(per_image, class_names),
    }
    label = checkpoint_label(workdir, which, step)
    if label != which:
        print(f"{workdir} holds no evaluated checkpoint to call best: scoring the latest, {step}")
    which = label
    report = {"split": split, "step": step, "checkpoint": which, "examples": len(source), **results}
    table = ""
    if jax.process_count() == 1:  # each process holds only its own rows' indices
        report["per_image"] = image_records(per_image, np.concatenate(indices), source)
        sizes = {r["index"]: source[r["index"]]["mask"].shape for r in report["per_image"]}
        rows = per_image_table.semantic_rows(report["per_image"], class_names, sizes)
        table = f" and {write_per_image(workdir, split, rows)}"
    write_atomically(
        os.path.join(workdir, f"eval_{split}.json"), json.dumps(report, indent=2, sort_keys=True)
    )
    print(
        f"{config.model.arch} / {config.model.encoder or 'plain'}, step {step} ({which}), "
        f"{split} split ({len(source)} examples)\n"
    )
    print(format_table(results, class_names))
    print(
        f"\nwrote {os.path.join(workdir, f'eval_{split}.json')}{table} and {saved} PNGs in "
        f"{image_dir} (image | ground truth | prediction)"
    )
    return report


def write_per_image(workdir: str, split: str, rows: list[dict]) -> str:
    """Writes ``per_image.csv`` (``per_image_table``; ``per_image_<split>.csv`` for a split
    other than the test split) when the split has images; returns its path."""
    name = "per_image.csv" if split == "test" else f"per_image_{split}.csv"
    path = os.path.join(workdir, name)
    if rows and jax.process_index() == 0:
        write_atomically(path, per_image_table.csv_text(rows))
    return path


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdir")
    args = flags.FLAGS
    unknown = [m for m in args.instances if m not in SPLITTERS]
    if unknown:
        raise UserError(f"--instances={','.join(args.instances)}: choose among {list(SPLITTERS)}")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UserError(f"--score_threshold={args.score_threshold:g}: give a score in [0, 1]")
    options = {
        "min_area": args.min_area,
        "seed_height": args.seed_height,
        "score_threshold": args.score_threshold,
    }
    if args.instances:
        evaluate_instance_run(
            args.workdir, args.split, args.checkpoint, args.num_images, args.instances, options
        )
    else:
        evaluate_run(args.workdir, args.split, args.checkpoint, args.num_images, options)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
