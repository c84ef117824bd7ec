"""One image's objects as each method finds them, beside the true ones: a PNG of panels.

    W=runs/instances D=../shared/data/dsb2018_nuclei U=runs/instances/unet_resnet18_watershed
    I=07fb37aafa6626608af90c1e18f6a743f29b6b233d2e427dcd1102df6a916cf5.png
    python experiments/instances/example_panel.py --image $D/images/$I --truth $D/instances/$I \\
        --workdirs $W/maskrcnn_fpn_resnet18,$W/maskrcnn_unetpp_resnet18,$U,$U \\
        --instances ,,components,watershed --seed_height 16 --min_area 16 \\
        --out experiments/instances/example.png

Each run predicts the image as ``segjax.predict`` does (``instance_predictor``: objects scoring
at least 0.5; a semantic run's foreground split by its ``--instances`` entry), and each panel is
titled with the run, its object count and its DSB score on this image.
"""

import os

import numpy as np
from absl import flags
from PIL import Image, ImageDraw

from segjax import cli
from segjax.data.images import load_image
from segjax.detection.instance_metrics import dsb_score, object_count
from segjax.errors import UserError
from segjax.instances import Splitter
from segjax.predict import instance_predictor
from segjax.visualize import instance_overlay, side_by_side


def define_flags() -> None:
    flags.DEFINE_string("image", None, "an RGB image")
    flags.DEFINE_string("truth", None, "its instance label map (PNG)")
    flags.DEFINE_list("workdirs", None, "runs, one panel each (comma-separated)")
    flags.DEFINE_list("instances", [], "per run: '' for Mask R-CNN, watershed or components")
    flags.DEFINE_float("seed_height", Splitter.seed_height, "watershed seed height, pixels")
    flags.DEFINE_integer("min_area", 1, "semantic runs: objects of fewer pixels are dropped")
    flags.DEFINE_integer("columns", 3, "panels per row")
    flags.DEFINE_string("out", None, "the PNG to write")


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` under a white strip holding ``title``."""
    strip = Image.new("RGB", (panel.shape[1], 18), "white")
    ImageDraw.Draw(strip).text((4, 3), title, fill="black")
    return np.concatenate([np.asarray(strip), panel], axis=0)


def grid(panels: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Panels of one size in rows of ``columns``, white between them and in empty places."""
    blank = np.full_like(panels[0], 255)
    panels = panels + [blank] * (-len(panels) % columns)
    rows = [side_by_side(panels[i : i + columns], gap) for i in range(0, len(panels), columns)]
    spacer = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    parts = [part for row in rows for part in (row, spacer)][:-1]
    return np.concatenate(parts, axis=0)


def main(argv) -> int:
    cli.positional(argv)
    cli.require("image", "truth", "workdirs", "out")
    args = flags.FLAGS
    methods = args.instances or [""] * len(args.workdirs)
    if len(methods) != len(args.workdirs):
        raise UserError(f"--instances has {len(methods)} entries for {len(args.workdirs)} runs")
    image = load_image(args.image, 3)
    truth = np.asarray(Image.open(args.truth)).astype(np.int32)
    panels = [
        titled(image, os.path.basename(args.image)[:12]),
        titled(instance_overlay(image, truth), f"truth: {object_count(truth)} objects"),
    ]
    for workdir, method in zip(args.workdirs, methods, strict=True):
        splitter = (
            Splitter(method, min_area=args.min_area, seed_height=args.seed_height)
            if method
            else None
        )
        predict, _ = instance_predictor(workdir, "best", splitter)
        labels, _, _ = predict(image)
        name = os.path.basename(os.path.normpath(workdir)) + (f" {method}" if method else "")
        score = dsb_score(truth, labels)
        title = f"{name}: {object_count(labels)} objects, DSB {score:.3f}"
        panels.append(titled(instance_overlay(image, labels), title))
        print(title)
    Image.fromarray(grid(panels, args.columns)).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
