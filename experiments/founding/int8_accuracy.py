"""What int8 costs in accuracy: each grid member exported to ONNX float32 and int8 at its scoring
size, both run by onnxruntime on the test split, nucleus IoU pooled over the split. Every seed is
measured, because the drop depends on the run (two GhostNet U-Nets of the same seed, trained on
different machines, lost 0.4 and 22.4 points).

    python experiments/founding/int8_accuracy.py --workdir runs/founding_grid \\
        --out experiments/founding/grid/int8.json

A member already in ``--out`` is kept as it is and not measured again, so the file fills up as
the grid's members finish, session by session (a finished member's checkpoint lives only on
the machine that trained it; its records are committed).

The int8 model is ``segjax.export --int8``'s (static QDQ, onnxruntime), calibrated on 32 training
images chosen at random (seed 0) and resized whole as the run trains on them; test images are
resized and normalised as ``segjax.evaluate`` does at ``data.eval_size``, so the float32 row
also checks the export against the evaluation's own figure (``jax``).
"""

import argparse
import json
import os
import sys

import numpy as np

from segjax.data import load_dataset
from segjax.data.augment import normalize, resize
from segjax.errors import CheckpointError
from segjax.export import export_onnx, normalisation
from segjax.files import write_atomically
from segjax.inference import restore
from segjax.metrics import confusion_matrix
from segjax.quantize import calibration_inputs, quantize_int8

CALIBRATION_IMAGES = 32


def session(blob: bytes):
    import onnxruntime

    return onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])


def pooled_iou(confusion: np.ndarray, index: int) -> float:
    tp = confusion[index, index]
    return float(tp / (confusion[index].sum() + confusion[:, index].sum() - tp))


def calibration_set(directory: str):
    """(restored run, its dataset, scoring size, calibration inputs): CALIBRATION_IMAGES
    training images chosen at random (seed 0), resized whole to ``data.eval_size``."""
    restored = restore(directory)
    data = restored.config.data
    size = tuple(data.eval_size)
    if not size:
        raise SystemExit(f"{directory}: data.eval_size is not set; this script scores at it")
    mean, std = normalisation(restored)
    dataset = load_dataset(data)
    train = dataset.split("train")
    order = np.random.default_rng(0).permutation(len(train))[:CALIBRATION_IMAGES]
    images = (resize(train[int(i)]["image"], train[int(i)]["mask"], size)[0] for i in order)
    inputs = calibration_inputs(images, size, mean, std, count=CALIBRATION_IMAGES)
    return restored, dataset, size, inputs


def test_set(restored, dataset, size) -> list[tuple[np.ndarray, np.ndarray]]:
    """(normalised (1, H, W, C) input, mask) of every test image, resized as ``segjax.evaluate``
    does at ``data.eval_size``."""
    mean, std = normalisation(restored)
    test = dataset.split("test")
    pairs = []
    for i in range(len(test)):
        image, mask = resize(test[i]["image"], test[i]["mask"], size)
        pairs.append((normalize(image, mean, std)[None], mask))
    return pairs


def nucleus_iou(blob: bytes, tests: list, class_names) -> float:
    """The ONNX model ``blob``'s nucleus IoU, pooled over ``tests``."""
    ort = session(blob)
    classes = len(class_names)
    confusion = np.zeros((max(classes, 2),) * 2, np.int64)
    for x, mask in tests:
        predicted = np.argmax(ort.run(None, {ort.get_inputs()[0].name: x})[0][0], axis=-1)
        confusion += np.asarray(
            confusion_matrix(predicted, mask, np.ones(mask.shape, bool), classes)
        )
    return pooled_iou(confusion, list(class_names).index("nucleus"))


def measure(directory: str, percentile: float | None = None) -> dict:
    restored, dataset, size, inputs = calibration_set(directory)
    fp32 = export_onnx(restored, size)
    tests = test_set(restored, dataset, size)
    fp32_iou = nucleus_iou(fp32, tests, restored.class_names)
    int8 = quantize_int8(fp32, inputs, percentile=percentile)
    int8_iou = nucleus_iou(int8, tests, restored.class_names)
    calibration = f"{CALIBRATION_IMAGES} training images resized to {size[0]}x{size[1]}"
    if percentile is not None:
        calibration += f"; activation ranges: percentile {percentile:g}"
    with open(os.path.join(directory, "eval_test.json")) as file:
        evaluated = json.load(file)
    return {
        "member": os.path.basename(directory),
        "step": restored.step,
        "jax": evaluated["iou/nucleus"],
        "fp32": fp32_iou,
        "int8": int8_iou,
        "difference": int8_iou - fp32_iou,
        "calibration": calibration,
    }


def each_member(directories: list[str], report) -> int:
    """``report(directory)`` for each run directory; exit status 2 at the first one whose
    checkpoint is not on this machine."""
    for directory in directories:
        try:
            report(directory)
        except CheckpointError as error:  # trained on another machine: only its records are here
            print(f"error: {error}", file=sys.stderr)
            return 2
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the grid's workdir")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--note", default="", help="stored with each member measured in this run")
    parser.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="activation ranges from this percentile of the calibration values (default: min/max)",
    )
    args = parser.parse_args()
    members = sorted(
        name
        for name in os.listdir(args.workdir)
        if os.path.exists(os.path.join(args.workdir, name, "eval_test.json"))
    )
    if not members:
        print(f"error: {args.workdir}: no evaluated member", file=sys.stderr)
        return 2
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as file:
            results = json.load(file)
    for name in members:
        if name in results:
            print(f"{name}: in {args.out} already", flush=True)
            continue
        print(f"{name} ...", flush=True)
        try:
            results[name] = row = measure(os.path.join(args.workdir, name), args.percentile)
        except CheckpointError as error:  # trained on another machine: only its records are here
            print(f"  skipped: {error}", flush=True)
            continue
        if args.note:
            row["note"] = args.note
        print(
            f"  nucleus IoU: JAX {row['jax']:.4f}, ONNX fp32 {row['fp32']:.4f}, "
            f"int8 {row['int8']:.4f} ({row['difference']:+.4f})",
            flush=True,
        )
        write_atomically(args.out, json.dumps(results, indent=2, sort_keys=True))  # each one kept
    print(f"{args.out}: {len(results)} members")
    return 0


if __name__ == "__main__":
    sys.exit(main())
