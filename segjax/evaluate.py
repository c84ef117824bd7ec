"""Evaluates a trained run: ``python -m segjax.evaluate --workdir runs/x [--split test]``.

Restores the best checkpoint by the run's ``best_metric`` (or ``--checkpoint latest`` / a step),
evaluates the split with the run's config, prints a table, writes ``WORKDIR/eval_<split>.json``
and PNGs of a few predictions beside their ground truth in ``WORKDIR/predictions_<split>/``.
"""

import json
import os

import jax
import numpy as np
from absl import flags
from PIL import Image

from segjax import cli
from segjax import metrics as metrics_lib
from segjax.files import write_atomically
from segjax.trainer import (
    dataset_record,
    eval_batches,
    jit_eval_step,
    jit_predict,
    restore_for_evaluation,
)
from segjax.visualize import colourise, denormalise, side_by_side
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


def evaluate_run(workdir: str, split: str, which: str, num_images: int) -> dict:
    run, state, step = restore_for_evaluation(workdir, which)
    config = run.config
    if jax.process_index() == 0 and read_dataset_record(workdir) is None:
        write_dataset_record(workdir, dataset_record(run))  # a workdir from before the records
    source = run.dataset.split(split)  # a missing or empty split: one line naming it
    p_eval, p_predict = jit_eval_step(run), jit_predict(run)

    per_image, saved = [], 0
    image_dir = os.path.join(workdir, f"predictions_{split}")
    os.makedirs(image_dir, exist_ok=True)
    for batch, global_batch in eval_batches(run, split):
        per_image.append(np.asarray(p_eval(state, global_batch).addressable_data(0)))
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
    report = {"split": split, "step": step, "checkpoint": which, "examples": len(source), **results}
    write_atomically(
        os.path.join(workdir, f"eval_{split}.json"), json.dumps(report, indent=2, sort_keys=True)
    )
    print(
        f"{config.model.arch} / {config.model.encoder or 'plain'}, step {step} ({which}), "
        f"{split} split ({len(source)} examples)\n"
    )
    print(format_table(results, class_names))
    print(
        f"\nwrote {os.path.join(workdir, f'eval_{split}.json')} and {saved} PNGs in {image_dir}"
        " (image | ground truth | prediction)"
    )
    return report


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdir")
    args = flags.FLAGS
    evaluate_run(args.workdir, args.split, args.checkpoint, args.num_images)
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
