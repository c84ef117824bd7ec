"""A folder dataset cut down to travel to a lent machine (64 MiB in all with the working tree and
the wheels): the first ``--train`` training images and masks (the split's order is a seeded
shuffle, so its mix of sizes), the first ``--keep`` of the validation and test splits, re-saved
as PNG at the highest compression (the same pixels), and a splits.json naming what is there.

    python benchmarks/device/pack_data.py ../shared/data/dsb2018_nuclei .devcarry/dsb2018
"""

import argparse
import json
import os

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=320, help="training images kept")
    parser.add_argument("--keep", type=int, default=20, help="validation and test images kept")
    args = parser.parse_args()
    with open(os.path.join(args.source, "splits.json")) as f:
        splits = json.load(f)
    kept = {name: s[: args.train if name == "train" else args.keep] for name, s in splits.items()}
    for folder in ("images", "masks"):
        os.makedirs(os.path.join(args.out, folder), exist_ok=True)
        for stems in kept.values():
            for stem in stems:
                with Image.open(os.path.join(args.source, folder, stem + ".png")) as image:
                    image.save(os.path.join(args.out, folder, stem + ".png"), optimize=True)
    with open(os.path.join(args.out, "splits.json"), "w") as f:
        json.dump(kept, f)
    print(f"{args.out}: " + ", ".join(f"{len(v)} {k}" for k, v in kept.items()))


if __name__ == "__main__":
    main()
