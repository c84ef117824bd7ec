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
"""

import glob
import io
import os
import time

import numpy as np
from absl import flags
from PIL import Image

from segjax import cli
from segjax.data.errors import DataError
from segjax.data.folder import IMAGE_SUFFIXES, load_image
from segjax.errors import RunError, UserError
from segjax.files import write_atomically
from segjax.inference import TTA_MODES, load_exported, load_predictor, predict_probabilities
from segjax.reporting import format_duration
from segjax.visualize import colourise

SAVES = ("probs", "overlay")


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the trained run's directory (or --model)")
    flags.DEFINE_string(
        "model", None, "instead of --workdir: a file from segjax.export (.onnx or .stablehlo)"
    )
    flags.DEFINE_string("input", None, "an image, a directory of images, or a quoted glob")
    flags.DEFINE_string("output", None, "directory for the masks (created)")
    flags.DEFINE_string("checkpoint", "best", "best, latest or a step number")
    flags.DEFINE_integer("tile", 0, "predict images larger than this by tiles (0: whole images)")
    flags.DEFINE_integer("overlap", 64, "pixels shared by neighbouring tiles")
    flags.DEFINE_enum("tta", "", list(TTA_MODES), "test-time augmentation: '' or flips")
    flags.DEFINE_integer("batch", 1, "tiles per forward pass")
    flags.DEFINE_list("save", [], f"extra outputs: any of {list(SAVES)}")


def find_inputs(pattern: str) -> list[str]:
    """The image files ``--input`` names, sorted; a one-line error if there are none."""
    if os.path.isdir(pattern):
        paths = [
            os.path.join(pattern, name)
            for name in os.listdir(pattern)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
        ]
    elif os.path.isfile(pattern):
        paths = [pattern]
    else:
        paths = [p for p in glob.glob(pattern) if os.path.isfile(p)]
    if not paths:
        raise UserError(
            f"--input={pattern!r}: no image files (a file, a directory of "
            f"{', '.join(IMAGE_SUFFIXES)} files, or a quoted glob)"
        )
    paths.sort()
    stems: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise UserError(f"--input: {stems[stem]} and {path} would both write {stem}.png")
        stems[stem] = path
    return paths


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


def predict_files(predictor, paths: list[str], output: str, options: dict, saves) -> list[str]:
    """Writes each image's outputs; returns the messages of the images that failed."""
    os.makedirs(output, exist_ok=True)
    num_classes = len(predictor.class_names)
    failed, start, pixels = [], time.perf_counter(), 0
    for index, path in enumerate(paths, 1):
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            image = load_image(path, predictor.channels)
        except DataError as error:
            failed.append(str(error))
            print(f"[{index}/{len(paths)}] skipped: {error}", flush=True)
            continue
        probs = predict_probabilities(predictor, image, **options)
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
        elapsed = time.perf_counter() - start
        eta = elapsed / index * (len(paths) - index)
        print(
            f"[{index}/{len(paths)}] {stem} {image.shape[0]}x{image.shape[1]}  "
            f"elapsed {format_duration(elapsed)}  ETA {format_duration(eta)}",
            flush=True,
        )
    done = len(paths) - len(failed)
    elapsed = time.perf_counter() - start
    print(
        f"predicted {done} of {len(paths)} images ({pixels / 1e6:.1f} Mpixels) in "
        f"{format_duration(elapsed)}; masks in {output}"
        + (f"; {len(failed)} could not be read" if failed else ""),
        flush=True,
    )
    return failed


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
    paths = find_inputs(args.input)
    if args.model:
        predictor = load_exported(args.model)
    else:
        predictor = load_predictor(args.workdir, args.checkpoint)
    print(
        f"{len(paths)} images, step {predictor.step} of {args.workdir or args.model}, classes "
        f"{list(predictor.class_names)}",
        flush=True,
    )
    options = dict(tile=args.tile, overlap=args.overlap, tta=args.tta, batch=args.batch)
    failed = predict_files(predictor, paths, args.output, options, set(args.save))
    if failed:
        raise RunError(
            f"{len(failed)} of {len(paths)} images could not be read: " + "; ".join(failed)
        )
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
