"""Scores a folder of predicted masks against a run's split, as ``segjax.evaluate`` scores:

    python -m segjax.score --workdir runs/x --split test --predictions masks/ [--json out.json]

``--predictions`` holds ``<name>.png`` for every example of the split (what ``segjax.predict``
writes for the split's images: class ids, or 0/255 for a two-class run). The ground truth, the
ignore label and the classes come from the run's config and data; the table and the metrics are
``segjax.evaluate``'s, so masks predicted by ``segjax.predict`` (from the workdir, or from an
exported ONNX / StableHLO / int8 file) can be compared with the run's own evaluation.
"""

import json
import os

import numpy as np
from absl import flags
from PIL import Image

from segjax import cli
from segjax import metrics as metrics_lib
from segjax.data.errors import DataError
from segjax.data.pipeline import make_preprocess
from segjax.errors import UserError
from segjax.evaluate import format_table
from segjax.files import write_atomically
from segjax.models import INSTANCE_ARCHS
from segjax.runs import load_config, prepare


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the run whose split (and classes) to score against")
    flags.DEFINE_string("split", "test", "train, validation or test")
    flags.DEFINE_string("predictions", None, "directory of <name>.png masks")
    flags.DEFINE_string("json", None, "also write the metrics to this JSON file")


def read_prediction(path: str, num_classes: int, shape: tuple[int, int]) -> np.ndarray:
    """A predicted mask as class ids; 0/255 is a two-class run's foreground."""
    try:
        with Image.open(path) as image:
            mask = np.asarray(image)
    except OSError as error:
        raise DataError(f"{path}: not a readable mask ({error})") from None
    if mask.ndim != 2 or mask.shape != shape:
        raise DataError(f"{path}: mask of shape {mask.shape}, the image is {shape}")
    if num_classes == 2:
        mask = np.where(mask == 255, 1, mask)
    if mask.max(initial=0) >= num_classes:
        raise DataError(f"{path}: class id {mask.max()} but the run has {num_classes} classes")
    return mask.astype(np.int32)


def score(workdir: str, split: str, predictions: str) -> dict:
    config = load_config(workdir)
    if config.model.arch in INSTANCE_ARCHS:
        raise UserError(
            f"{workdir} is a {config.model.arch} (instance segmentation) run; segjax.score "
            "scores class masks (segjax.evaluate scores instance runs)"
        )
    run = prepare(config)
    dataset = run.dataset
    ignore = make_preprocess(dataset, run.config.data).ignore_label
    source = dataset.split(split)
    names = [str(source[i]["name"]).replace("/", "_") for i in range(len(source))]
    missing = [n for n in names if not os.path.exists(os.path.join(predictions, f"{n}.png"))]
    if missing:
        raise UserError(
            f"--predictions={predictions}: {len(missing)} of the {len(names)} {split} examples "
            f"have no <name>.png there, e.g. {missing[0]}.png"
        )
    confusions = []
    for index, name in enumerate(names):
        label = np.asarray(source[index]["mask"]).astype(np.int32)
        predicted = read_prediction(
            os.path.join(predictions, f"{name}.png"), dataset.num_classes, label.shape
        )
        valid = label != ignore if ignore is not None else np.ones(label.shape, bool)
        confusion = metrics_lib.per_image_confusion(
            predicted[None], np.where(valid, label, 0)[None], valid[None], dataset.num_classes
        )
        confusions.append(np.asarray(confusion))
    confusions = np.concatenate(confusions)
    class_names = list(dataset.class_names)
    return {
        "split": split,
        "examples": len(names),
        "predictions": os.path.abspath(predictions),
        "class_names": class_names,
        **metrics_lib.summarize(confusions.sum(axis=0), class_names),
        **metrics_lib.summarize_per_image(confusions, class_names),
    }


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdir", "predictions")
    args = flags.FLAGS
    results = score(args.workdir, args.split, args.predictions)
    print(f"{args.predictions} against {args.workdir}'s {args.split} split ({results['examples']} "
          "examples)\n")  # fmt: skip
    print(format_table(results, results["class_names"]))
    if args.json:
        write_atomically(args.json, json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
