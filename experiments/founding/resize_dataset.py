"""A copy of a folder dataset with every image and mask already resized to one size.

The founding grid trains and evaluates on whole images resized to 96x96
(``data.augment.whole_image``, ``data.eval_size``), with ``segjax.data.augment.resize``:
bilinear for the image, nearest for the mask. Resizing them ahead with that same function gives
the pipeline images already at 96x96, which it resizes to themselves (Pillow copies an image
resized to its own size), so training and evaluation see the same arrays as from the full-size
folder, and the copy is a sixth of its size: small enough to travel to a lent GPU machine
(experiments/founding/h200_grid.sh).

    python experiments/founding/resize_dataset.py ../shared/data/dsb2018_nuclei \
        --out .devcarry/dsb2018_nuclei_96 --size 96
"""

import argparse
import os
import shutil

import numpy as np
from PIL import Image

from segjax.data import augment
from segjax.data.images import load_image

# The raw mask file is resized (0/255 kept), not load_mask's 0/1: nearest resampling commutes
# with the builder's 255 -> 1, and the builder then sees a binary mask as before.


def resize_folder(root: str, out: str, size: int, channels: int = 3) -> int:
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    images = {os.path.splitext(f)[0]: f for f in os.listdir(os.path.join(root, "images"))}
    count = 0
    for name in sorted(os.listdir(os.path.join(root, "masks"))):
        stem = os.path.splitext(name)[0]
        image = load_image(os.path.join(root, "images", images[stem]), channels)
        with Image.open(os.path.join(root, "masks", name)) as mask_file:
            mask = np.asarray(mask_file)
        image, mask = augment.resize(image, mask, (size, size))
        Image.fromarray(image if channels > 1 else image[..., 0]).save(
            os.path.join(out, "images", stem + ".png")
        )
        Image.fromarray(mask).save(os.path.join(out, "masks", name))
        count += 1
    for extra in ("splits.json", "classes.json"):
        if os.path.exists(os.path.join(root, extra)):
            shutil.copy(os.path.join(root, extra), os.path.join(out, extra))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root")
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    count = resize_folder(args.root, args.out, args.size)
    print(f"{count} images and masks resized to {args.size}x{args.size} in {args.out}")


if __name__ == "__main__":
    main()
