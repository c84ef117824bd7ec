"""Predicts masks for any images with a trained run:

    python -m segjax.predict --workdir runs/x --input 'scans/*.tif' --output masks/ \\
        [--checkpoint best] [--tile 512 --overlap 64] [--tta flips] [--batch 4] \\
        [--save probs,overlay]

``--input`` is a file, a directory (its images) or a quoted glob. Writes ``OUTPUT/<stem>.png``:
class ids, or 0/255 for a two-class (binary) run; ``--save overlay`` adds ``<stem>_overlay.png``
(the image with the prediction's colours over it) and ``--save probs`` ``<stem>_probs.npy``
(float16, H x W x classes). Images larger than ``--tile`` are predicted by overlapping tiles
blended with a smooth window. An image that cannot be read is named, skipped, and the others are
written; the exit status is then 1. ``--model FILE`` (from ``segjax.export``) predicts without
the workdir: ONNX through onnxruntime (by tiles of its input size), or StableHLO, its
preprocessing from ``FILE.json``.

Instance segmentation: a Mask R-CNN run (or a semantic run with ``--instances watershed`` or
``components``, its foreground split into objects; ``--seed_height`` and ``--min_area`` as for
``segjax.evaluate``) writes ``OUTPUT/<stem>.png`` as a 16-bit
label map (0 = background, 1..N = objects, best first), ``<stem>.json`` with each object's id,
score, class, box and area (objects scoring at least ``--score_threshold``, 0.5 by default),
and with ``--save overlay`` ``<stem>_overlay.png`` (each object
tinted and outlined in its own colour). Whole images only (no tiles or flips). A Mask R-CNN
exported by ``segjax.export`` predicts the same way with ``--model FILE``, each image padded to the
file's input size (an image larger than that is named and skipped).
"""

import dataclasses
import io
import json
import os
import sys
import time

import numpy as np
from absl import flags
from PIL import Image

from segjax import cli
from segjax.data.errors import DataError
from segjax.data.images import find_inputs, load_image
from segjax.detection.label_maps import (
    SCORE_THRESHOLD,
    SPLITTERS,
    Splitter,
    confident_labels,
    label_map,
)
from segjax.errors import RunError, UserError
from segjax.files import write_atomically
from segjax.inference import TTA_MODES, load_exported, load_predictor, predict_probabilities
from segjax.memory_budget import automatic_tile, available_bytes, gib, needed_bytes
from segjax.reporting import format_duration
from segjax.visualize import colourise, instance_overlay

SAVES = ("probs", "overlay")


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the trained run's directory (or --model)")
    flags.DEFINE_string(
        "model", None, "instead of --workdir: a file from segjax.export (.onnx or .stablehlo)"
    )
    flags.DEFINE_string("input", None, "an image, a directory of images, or a quoted glob")
    flags.DEFINE_string("output", None, "directory for the masks (created)")
    flags.DEFINE_string("checkpoint", "best", "best, latest or a step number")
    flags.DEFINE_integer(
        "tile",
        0,
        "predict images larger than this by tiles (0: whole images where they fit the memory, "
        "else tiles that do, said on the image's line)",
    )
    flags.DEFINE_enum(
        "resize",
        "",
        ["", "train"],
        "'train': predict each image resized to the size the model was trained at (a run "
        "trained on whole images resized to data.image_size), the mask mapped back",
    )
    flags.DEFINE_integer(
        "memory_limit",
        0,
        "MiB a whole-image pass may use before predict goes by tiles (0: half of the memory "
        "available, the device's or the host's)",
    )
    flags.DEFINE_integer("overlap", 64, "pixels shared by neighbouring tiles")
    flags.DEFINE_enum("tta", "", list(TTA_MODES), "test-time augmentation: '' or flips")
    flags.DEFINE_integer("batch", 1, "tiles per forward pass")
    flags.DEFINE_list("save", [], f"extra outputs: any of {list(SAVES)}")
    flags.DEFINE_enum(
        "instances",
        "",
        ["", *SPLITTERS],
        "a semantic run's foreground split into objects (label maps, as a Mask R-CNN run writes)",
    )
    flags.DEFINE_integer(
        "min_area", 1, "objects of fewer pixels are dropped (Mask R-CNN runs and --instances)"
    )
    flags.DEFINE_float(
        "seed_height",
        Splitter.seed_height,
        "--instances watershed: least height of a seed (h-maxima of the distance transform, in "
        "pixels; experiments/instances/splitter_choice.py chooses it on a validation split)",
    )
    flags.DEFINE_float(
        "score_threshold",
        SCORE_THRESHOLD,
        "instance runs: objects scoring less are left out of the label map",
    )


def mask_image(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids as uint8; a two-class run's foreground as 255."""
    if num_classes == 2:
        return (mask * 255).astype(np.uint8)
    return mask.astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    return (0.5 * rgb + 0.5 * colourise(mask)).astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def output_names(stem: str, instances: bool, saves) -> list[str]:
    """The files predict writes for an input of ``stem`` (``--save`` adds to them)."""
    names = [f"{stem}.png"]
    if instances:
        names.append(f"{stem}.json")
    if "overlay" in saves:
        names.append(f"{stem}_overlay.png")
    if "probs" in saves and not instances:
        names.append(f"{stem}_probs.npy")
    return names


def check_outputs(paths: list[str], output: str, instances: bool, saves) -> None:
    """Refuses, before any work, outputs that would overwrite an input image (an ``--output``
    that is the input folder, or holds inputs) or each other (``a.png`` and ``a_overlay.png``
    with ``--save overlay``), naming the files."""
    inputs = {os.path.realpath(path): path for path in paths}
    folder = os.path.realpath(output)
    written: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        for name in output_names(stem, instances, saves):
            target = os.path.join(folder, name)
            if target in inputs:
                raise UserError(
                    f"--output={output}: writing {name} would overwrite the input image "
                    f"{inputs[target]}; give another output folder"
                )
            if target in written:
                raise UserError(
                    f"--output={output}: {written[target]} and {path} would both write {name}; "
                    "rename one of them or predict them into separate folders"
                )
            written[target] = path


def each_image(paths: list[str], channels: int, handle) -> tuple[list[str], float]:
    """Reads each image and calls ``handle(stem, path, image)``, which writes its outputs and
    returns a note for the progress line; an unreadable image is skipped and reported. Returns
    (the failures' messages, the seconds taken). The one per-file loop of both predict modes."""
    failed, start = [], time.perf_counter()
    for index, path in enumerate(paths, 1):
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            image = load_image(path, channels)
            note = handle(stem, path, image)
        except DataError as error:  # unreadable, or one the model cannot take
            message = str(error) if path in str(error) else f"{path}: {error}"
            failed.append(message)
            print(f"[{index}/{len(paths)}] skipped: {message}", flush=True)
            continue
        elapsed = time.perf_counter() - start
        eta = elapsed / index * (len(paths) - index)
        print(
            f"[{index}/{len(paths)}] {stem} {image.shape[0]}x{image.shape[1]}{note}  "
            f"elapsed {format_duration(elapsed)}  ETA {format_duration(eta)}",
            flush=True,
        )
    return failed, time.perf_counter() - start


FAR_FROM_TRAINING = 2.0  # a side this many times larger or smaller than the training size


def scale_warning(predictor, image: np.ndarray, path: str) -> str:
    """A warning line for an image far from the size a whole-image-trained model learnt its
    objects' scale at ('' otherwise): naming the image, both sizes and ``--resize train``."""
    if predictor.train_size is None or predictor.eval_size:
        return ""
    ratios = [s / t for s, t in zip(image.shape[:2], predictor.train_size, strict=True)]
    if all(1 / FAR_FROM_TRAINING <= r <= FAR_FROM_TRAINING for r in ratios):
        return ""
    height, width = predictor.train_size
    return (
        f"warning: {path}: {image.shape[0]}x{image.shape[1]} is far from the {height}x{width} "
        "the model was trained at (whole images resized to data.image_size), so its objects "
        "are at another scale; --resize train predicts at that size and maps the mask back"
    )


def fitting_tile(predictor, image: np.ndarray, path: str, budget: int) -> tuple[int, str]:
    """(the tile an image needs to fit ``budget`` bytes, 0 for the whole image; the note that
    says so on its progress line), for a predictor that can tell its memory per pixel."""
    if predictor.bytes_per_pixel is None or predictor.eval_size:
        return 0, ""
    height, width = (n + -n % predictor.multiple for n in image.shape[:2])
    per_pixel = predictor.bytes_per_pixel()
    try:
        tile = automatic_tile(per_pixel, height, width, budget, predictor.multiple)
    except ValueError as error:
        raise RunError(
            f"{path} ({image.shape[0]}x{image.shape[1]}): {error}; raise --memory_limit"
        ) from None
    if not tile:
        return 0, ""
    need = gib(needed_bytes(per_pixel, height, width))
    return tile, f" by tiles of {tile} (whole: ~{need}, over the {gib(budget)} allowed)"


def predict_files(
    predictor, paths: list[str], output: str, options: dict, saves, budget: int = 0
) -> list[str]:
    """Writes each image's outputs; returns the messages of the images that failed. Without
    ``options['tile']``, an image whose whole-image pass would need more than ``budget`` bytes
    goes by tiles that fit (``memory_budget``)."""
    os.makedirs(output, exist_ok=True)
    num_classes = len(predictor.class_names)
    pixels = 0

    def handle(stem: str, path: str, image: np.ndarray) -> str:
        nonlocal pixels
        warning = scale_warning(predictor, image, path)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        chosen, note = options, ""
        if not options["tile"] and budget:
            tile, note = fitting_tile(predictor, image, path, budget)
            if tile:
                overlap = options["overlap"] if options["overlap"] < tile else tile // 4
                chosen = {**options, "tile": tile, "overlap": overlap}
        probs = predict_probabilities(predictor, image, **chosen)
        mask = np.argmax(probs, axis=-1)
        write_atomically(os.path.join(output, f"{stem}.png"), _png(mask_image(mask, num_classes)))
        if "overlay" in saves:
            write_atomically(
                os.path.join(output, f"{stem}_overlay.png"), _png(overlay(image, mask))
            )
        if "probs" in saves:
            write_atomically(
                os.path.join(output, f"{stem}_probs.npy"), _npy(probs.astype(np.float16))
            )
        pixels += mask.size
        return note

    failed, elapsed = each_image(paths, predictor.channels, handle)
    print(
        f"predicted {len(paths) - len(failed)} of {len(paths)} images ({pixels / 1e6:.1f} "
        f"Mpixels) in {format_duration(elapsed)}; masks in {output}"
        + (f"; {len(failed)} could not be read" if failed else ""),
        flush=True,
    )
    return failed


def instance_records(labels: np.ndarray, scores: dict[int, float], classes: dict[int, str]):
    """One JSON record per object of a label map."""
    records = []
    for label in sorted(scores):
        ys, xs = np.nonzero(labels == label)
        if not len(ys):
            continue
        records.append(
            {
                "id": int(label),
                "score": round(float(scores[label]), 5),
                "class": classes.get(label, ""),
                "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                "area": int(len(ys)),
            }
        )
    return records


def instance_predictor(
    workdir: str,
    which: str,
    splitter: Splitter | None = None,
    min_area: int = 1,
    threshold: float = SCORE_THRESHOLD,
):
    """image uint8 (H, W, C) -> (label map, {label: score}, {label: class name}) of a run: a
    Mask R-CNN's detections, or a semantic run's foreground split by ``splitter``."""
    import jax
    import jax.numpy as jnp

    from segjax.data.augment import normalize
    from segjax.inference import pad_to, restore
    from segjax.losses import head_probabilities
    from segjax.models import is_instance_model

    restored = restore(workdir, which)
    model, data = restored.model, restored.config.data
    detector = is_instance_model(model)
    if detector and splitter:
        raise UserError(
            f"--instances={splitter.method}: {workdir} is a Mask R-CNN run (it finds objects)"
        )
    if not detector and not splitter:
        raise UserError("instance_predictor needs --instances for a semantic run")
    mode = restored.config.deep_supervision_mode
    if detector:
        forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    else:
        forward = jax.jit(lambda v, x: head_probabilities(model.apply(v, x, train=False), mode))
    names = restored.class_names

    def run(image: np.ndarray):
        x = normalize(image, tuple(data.mean) or None, tuple(data.std) or None)[None]
        height, width = x.shape[1:3]
        x = pad_to(x, restored.multiple)
        out = jax.device_get(forward(restored.variables, jnp.asarray(x)))
        if detector:
            return detected_objects(out, (height, width), names, min_area, threshold)
        foreground = 1.0 - out[0, :height, :width, 0]
        labels, scores, _ = label_map(foreground, (height, width), splitter)
        classes = {label: names[-1] for label in scores}
        return confident(labels, scores, threshold) + (classes,)

    return run, restored


def confident(labels: np.ndarray, scores: dict[int, float], threshold: float):
    """(label map, {label: score}) without the objects scoring below ``threshold``."""
    labels = confident_labels(labels, scores, threshold)
    return labels, {label: value for label, value in scores.items() if value >= threshold}


def detected_objects(out: dict, shape: tuple[int, int], names, min_area: int, threshold: float):
    """(label map, {label: score}, {label: class name}) of one image's Mask R-CNN outputs
    (batch of one), as the run itself and its exported files predict."""
    keep = np.asarray(out["valid"][0], bool)
    mine = {key: np.asarray(out[key][0])[keep] for key in ("boxes", "scores", "masks", "classes")}
    labels, scores, origin = label_map(mine, shape, None, min_area)
    classes = {label: names[int(mine["classes"][i])] for label, i in origin.items()}
    return confident(labels, scores, threshold) + (classes,)


def exported_instance_predictor(path: str, min_area: int = 1, threshold: float = SCORE_THRESHOLD):
    """``instance_predictor`` of a Mask R-CNN file from ``segjax.export``: each image padded
    at the bottom and right to the file's fixed input size (an image larger than it cannot be
    predicted, and is reported as such)."""
    from segjax.data.augment import normalize
    from segjax.inference import load_exported_detector, pad_to

    detector = load_exported_detector(path)
    size, m = detector.size, detector.multiple

    def run(image: np.ndarray):
        height, width = image.shape[:2]
        if height > size[0] or width > size[1]:
            raise DataError(
                f"{height}x{width} is larger than the {size[0]}x{size[1]} input of {path}: "
                f"export the run again with --size {height + -height % m}x{width + -width % m} "
                "or more"
            )
        x = pad_to(normalize(image, detector.mean, detector.std)[None], 1, size)
        out = detector.detect(x)
        return detected_objects(out, (height, width), detector.class_names, min_area, threshold)

    return run, detector


def predict_instance_files(run, channels: int, paths, output: str, saves) -> list[str]:
    """Writes each image's label map, JSON and overlay; returns the failures' messages."""
    os.makedirs(output, exist_ok=True)

    def handle(stem: str, path: str, image: np.ndarray) -> str:
        labels, scores, classes = run(image)
        if labels.max(initial=0) > 65535:
            raise RunError(f"{path}: {labels.max()} objects do not fit a 16-bit label map")
        write_atomically(os.path.join(output, f"{stem}.png"), _png(labels.astype(np.uint16)))
        records = instance_records(labels, scores, classes)
        write_atomically(
            os.path.join(output, f"{stem}.json"),
            json.dumps({"image": path, "objects": records}, indent=1),
        )
        if "overlay" in saves:
            rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
            write_atomically(
                os.path.join(output, f"{stem}_overlay.png"), _png(instance_overlay(rgb, labels))
            )
        return f": {len(records)} objects"

    failed, elapsed = each_image(paths, channels, handle)
    print(
        f"predicted {len(paths) - len(failed)} of {len(paths)} images in "
        f"{format_duration(elapsed)}; label maps in {output}",
        flush=True,
    )
    return failed


def fitted_overlap(predictor, tile: int, overlap: int, given: bool) -> int:
    """The tiles' overlap for ``predictor``: an exported model of one input size predicts by
    tiles of (at most) that size, so the default overlap shrinks to a quarter of it where it
    would not fit; an ``--overlap`` the user gave that cannot fit is refused."""
    if not predictor.fixed_size:
        return overlap
    size = min(predictor.fixed_size) if not tile else min(tile, *predictor.fixed_size)
    if overlap < size:
        return overlap
    if given:
        raise UserError(
            f"--overlap={overlap} must be less than the {size}-pixel tiles of this model (its "
            f"fixed input size is {predictor.fixed_size[0]}x{predictor.fixed_size[1]}); "
            f"e.g. --overlap={size // 4}"
        )
    print(f"tiles of {size} pixels (the model's input size): overlap {size // 4}", flush=True)
    return size // 4


def _is_instance_run(workdir: str) -> bool:
    from segjax.models import INSTANCE_ARCHS
    from segjax.runs import load_config

    return load_config(workdir).model.arch in INSTANCE_ARCHS


def main(argv) -> int:
    cli.positional(argv)
    cli.require("input", "output")
    args = flags.FLAGS
    if bool(args.workdir) == bool(args.model):
        raise UserError("give one of --workdir (a trained run) and --model (an exported file)")
    unknown = sorted(set(args.save) - set(SAVES))
    if unknown:
        raise UserError(f"--save={','.join(args.save)}: unknown {unknown}; choose from {SAVES}")
    if args.tile and not 0 <= args.overlap < args.tile:
        raise UserError(f"--overlap={args.overlap} must be in [0, --tile={args.tile})")
    if args.batch < 1:
        raise UserError(f"--batch={args.batch} must be at least 1")
    if args.memory_limit < 0:
        raise UserError(f"--memory_limit={args.memory_limit} must be 0 (automatic) or more MiB")
    paths = find_inputs(args.input)
    cli.check_output(args.output, "directory")  # before a model is loaded
    if args.model:
        from segjax.inference import exported_detections, read_sidecar

        instances = exported_detections(read_sidecar(args.model))
    else:
        instances = bool(args.instances or _is_instance_run(args.workdir))
    check_outputs(paths, args.output, instances, set(args.save))
    if instances:
        if args.tile or args.tta or "probs" in args.save or args.resize:
            raise UserError(
                "instance segmentation predicts whole images: --tile, --tta, --resize and "
                "--save probs do not apply"
            )
        if args.model and args.instances:
            raise UserError(f"--instances: {args.model} is a Mask R-CNN (it finds objects)")
        splitter = (
            Splitter(args.instances, min_area=args.min_area, seed_height=args.seed_height)
            if args.instances
            else None
        )
        if args.model:
            run, source = exported_instance_predictor(
                args.model, args.min_area, args.score_threshold
            )
        else:
            run, source = instance_predictor(
                args.workdir, args.checkpoint, splitter, args.min_area, args.score_threshold
            )
        print(
            f"{len(paths)} images, step {source.step} of {args.workdir or args.model}", flush=True
        )
        failed = predict_instance_files(run, source.channels, paths, args.output, set(args.save))
        if failed:
            raise RunError(
                f"{len(failed)} of {len(paths)} images were skipped: " + "; ".join(failed)
            )
        return 0
    if args.model and args.instances:
        raise UserError("--instances needs --workdir (a trained run)")
    if args.model:
        predictor = load_exported(args.model)
    else:
        predictor = load_predictor(args.workdir, args.checkpoint)
    if args.resize == "train":
        if predictor.train_size is None:
            raise UserError(
                f"--resize train: {args.workdir or args.model} was not trained on whole images "
                "resized to one size (data.augment.whole_image), so the images' own size is its "
                "scale; predict without --resize"
            )
        predictor = dataclasses.replace(predictor, eval_size=predictor.train_size)
    print(
        f"{len(paths)} images, step {predictor.step} of {args.workdir or args.model}, classes "
        f"{list(predictor.class_names)}",
        flush=True,
    )
    overlap = fitted_overlap(predictor, args.tile, args.overlap, flags.FLAGS["overlap"].present)
    options = dict(tile=args.tile, overlap=overlap, tta=args.tta, batch=args.batch)
    budget = 0
    if not args.tile and predictor.bytes_per_pixel is not None:
        budget = args.memory_limit * 2**20 or available_bytes() // 2
    failed = predict_files(predictor, paths, args.output, options, set(args.save), budget)
    if failed:
        raise RunError(
            f"{len(failed)} of {len(paths)} images could not be read: " + "; ".join(failed)
        )
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
