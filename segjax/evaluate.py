"""Evaluates a trained run: ``python -m segjax.evaluate --workdir runs/x [--split test]``.

Restores the best checkpoint by the run's ``best_metric`` (or ``--checkpoint latest`` / a step),
evaluates the split with the run's config, prints a table, writes ``WORKDIR/eval_<split>.json``
and PNGs of a few predictions beside their ground truth in ``WORKDIR/predictions_<split>/``.
"""

import json
import math
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from PIL import Image

from segjax import metrics as metrics_lib
from segjax import parallel
from segjax.checkpoint import Checkpointer
from segjax.cli import parse_flags
from segjax.data import DataError, eval_dataset
from segjax.train import TrainingError, eval_step, setup_run
from segjax.visualize import colourise, denormalise, side_by_side


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the run's directory")
    flags.DEFINE_string("split", "test", "train, validation or test")
    flags.DEFINE_string("checkpoint", "best", "best, latest, or a step number")
    flags.DEFINE_integer("num_images", 6, "predictions to save as PNGs")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise TrainingError(f"{path}: not found; is {workdir} the workdir of a training run?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def choose_step(workdir: str, checkpointer: Checkpointer, which: str, metric: str) -> int:
    steps = sorted(checkpointer.manager.all_steps())
    if not steps:
        raise TrainingError(f"no checkpoint in {checkpointer.directory}")
    if which == "latest":
        return steps[-1]
    if which != "best":
        if not which.isdigit() or int(which) not in steps:
            raise TrainingError(f"--checkpoint={which}: choose best, latest or one of {steps}")
        return int(which)
    scores = {}
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        for line in open(metrics_path):
            record = json.loads(line)
            value = record.get(f"eval/{metric}")
            if record["step"] in steps and isinstance(value, float) and math.isfinite(value):
                scores[record["step"]] = value
    return max(scores, key=scores.get) if scores else steps[-1]


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
    config = load_config(workdir)
    run = setup_run(config)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), config.keep_checkpoints, config.best_metric
    )
    step = choose_step(workdir, checkpointer, which, config.best_metric)
    abstract = jax.eval_shape(run.init_fn(), jax.random.PRNGKey(0))
    like = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=run.replicated), abstract
    )
    state, _ = checkpointer.restore(step, like)
    checkpointer.close()

    p_eval = jax.jit(
        lambda s, b: eval_step(
            s,
            b,
            model=run.model,
            num_classes=run.dataset.num_classes,
            mode=config.deep_supervision_mode,
        ),
        in_shardings=(run.replicated, run.batch_sharding),
        out_shardings=run.replicated,
    )
    p_predict = jax.jit(
        lambda s, x: metrics_lib.predict(
            run.model.apply(
                {"params": s.params, **({"batch_stats": s.batch_stats} if s.batch_stats else {})},
                x,
                train=False,
            ),
            config.deep_supervision_mode,
        ),
        in_shardings=(run.replicated, run.batch_sharding),
        out_shardings=run.batch_sharding,
    )

    per_image, saved = [], 0
    image_dir = os.path.join(workdir, f"predictions_{split}")
    os.makedirs(image_dir, exist_ok=True)
    source = run.dataset.split(split)
    batches = eval_dataset(
        run.dataset, split, config.data, config.batch_size, row_multiple=jax.device_count()
    )
    for batch in batches:
        global_batch = parallel.to_global(batch, run.batch_sharding)
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
    with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
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


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    args = flags.FLAGS
    if not args.workdir:
        raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.WARNING)
    try:
        evaluate_run(args.workdir, args.split, args.checkpoint, args.num_images)
    except (ValueError, DataError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
