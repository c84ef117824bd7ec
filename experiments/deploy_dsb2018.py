"""Deployment checks on DSB 2018's test split, through the command lines a user runs:

    python experiments/deploy_dsb2018.py \\
        --workdirs runs/dsb_unet_resnet34,runs/dsb_unet_ghostnet100 --out experiments/deploy_dsb2018

For each trained run: ``segjax.evaluate`` on the test split; ``segjax.export`` to ONNX float32,
ONNX int8 (calibrated on 64 training images) and StableHLO; ``segjax.predict`` on the split's
images from the workdir (whole images, then tiles), from the ONNX float32 and int8 files and from
the StableHLO file; each folder of masks scored by ``segjax.score`` against the ground truth.
Then one 3000x4000 mosaic of test images predicted by tiles: peak RSS (``/usr/bin/time``) and the
probability jumps across tile edges against those elsewhere. Writes ``results.json`` and
``results.md`` in ``--out``; the big image's mask and overlay are kept there as PNGs (downscaled).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from PIL import Image

DATA = "../shared/data/dsb2018_nuclei"
ONNX_SIZE = 256
TILE, OVERLAP = 256, 64
BIG_TILE, BIG_OVERLAP = 512, 64
BIG_SIZE = (3000, 4000)


def sh(command: list[str], log) -> tuple[str, float]:
    """Runs a command (its output appended to ``log``); stops the experiment if it fails."""
    print("$ " + " ".join(command), flush=True)
    log.write("$ " + " ".join(command) + "\n")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log.write(result.stdout + result.stderr + "\n")
    log.flush()
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr, seconds


def test_images(scratch: str) -> str:
    """A directory of links to the test split's images (splits.json)."""
    with open(os.path.join(DATA, "splits.json")) as file:
        names = json.load(file)["test"]
    folder = os.path.join(scratch, "test_images")
    os.makedirs(folder, exist_ok=True)
    for name in names:
        link = os.path.join(folder, f"{name}.png")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(DATA, "images", f"{name}.png")), link)
    return folder


def mosaic(images: str, path: str) -> None:
    """A BIG_SIZE RGB image tiled from the test images (each cropped to at most 500x500)."""
    canvas = np.zeros((*BIG_SIZE, 3), np.uint8)
    files = sorted(os.listdir(images))
    top, i = 0, 0
    while top < BIG_SIZE[0]:
        left, row_height = 0, 0
        while left < BIG_SIZE[1]:
            with Image.open(os.path.join(images, files[i % len(files)])) as image:
                tile = np.asarray(image.convert("RGB"))[:500, :500]
            i += 1
            h, w = tile.shape[:2]
            h, w = min(h, BIG_SIZE[0] - top), min(w, BIG_SIZE[1] - left)
            canvas[top : top + h, left : left + w] = tile[:h, :w]
            left, row_height = left + w, max(row_height, h)
        top += row_height
    Image.fromarray(canvas).save(path)


def seam_ratio(probs: np.ndarray) -> dict:
    """Mean |change| of the foreground probability between neighbouring rows / columns at the
    tile edges (where one tile's weight ends: each tile start + overlap / 2 region) against the
    mean over all neighbouring pairs; 1.0 means the edges look like anywhere else."""
    from segjax.tiling import tile_starts

    p = probs[..., -1].astype(np.float32)
    out = {}
    for axis, length in ((0, p.shape[0]), (1, p.shape[1])):
        jumps = np.abs(np.diff(p, axis=axis)).mean(axis=1 - axis)
        starts = tile_starts(length, BIG_TILE, BIG_OVERLAP)
        edges = [s + d for s in starts[1:] for d in range(0, BIG_OVERLAP)]
        edges += [s + BIG_TILE - 1 - d for s in starts[:-1] for d in range(0, BIG_OVERLAP)]
        edges = sorted({e for e in edges if 0 <= e < length - 1})
        out["rows" if axis == 0 else "columns"] = float(jumps[edges].mean() / jumps.mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdirs", default="", help="comma-separated trained runs")
    parser.add_argument("--out", default="experiments/deploy_dsb2018")
    parser.add_argument("--scratch", default="runs/deploy_dsb2018")
    parser.add_argument("--calibration_images", type=int, default=64)
    parser.add_argument("--table_only", action="store_true", help="rewrite results.md only")
    args = parser.parse_args()
    if args.table_only:
        with open(os.path.join(args.out, "results.json")) as file:
            write_table(json.load(file), args.out)
        return
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.scratch, exist_ok=True)
    py = sys.executable
    images = test_images(args.scratch)
    big = os.path.join(args.scratch, "big_3000x4000.png")
    if not os.path.exists(big):
        mosaic(images, big)
    results = {"onnx_size": ONNX_SIZE, "tile": TILE, "overlap": OVERLAP, "runs": {}}
    previous = os.path.join(args.out, "results.json")
    if os.path.exists(previous):  # runs measured before are kept; the ones named are redone
        with open(previous) as file:
            results["runs"] = json.load(file)["runs"]
    with open(os.path.join(args.scratch, "commands.log"), "a") as log:
        for workdir in args.workdirs.split(","):
            name = os.path.basename(workdir.rstrip("/"))
            scratch = os.path.join(args.scratch, name)
            row = results["runs"][name] = {"workdir": workdir}
            sh([py, "-m", "segjax.evaluate", "--workdir", workdir, "--split", "test",
                "--num_images", "0"], log)  # fmt: skip
            with open(os.path.join(workdir, "eval_test.json")) as file:
                evaluated = json.load(file)
            row["evaluate"] = {k: evaluated[k] for k in ("miou", "image_miou", "iou/nucleus")}
            files = {
                "onnx_fp32": ("onnx", ["--size", str(ONNX_SIZE)]),
                "onnx_int8": ("onnx", ["--size", str(ONNX_SIZE), "--int8",
                                       "--calibration_images", str(args.calibration_images)]),
                "stablehlo": ("stablehlo", []),
            }  # fmt: skip
            row["file_bytes"] = {}
            for kind, (fmt, extra) in files.items():
                path = os.path.join(scratch, f"{kind}.{fmt}")
                sh([py, "-m", "segjax.export", "--workdir", workdir, "--format", fmt,
                    "--output", path, *extra], log)  # fmt: skip
                row["file_bytes"][kind] = os.path.getsize(path)
            tiles = ["--tile", str(TILE), "--overlap", str(OVERLAP)]
            onnx_tiles = ["--tile", str(ONNX_SIZE), "--overlap", str(OVERLAP)]
            sources = {
                "workdir": ["--workdir", workdir],
                "workdir_tiled": ["--workdir", workdir, *tiles],
                "stablehlo": ["--model", os.path.join(scratch, "stablehlo.stablehlo")],
                "onnx_fp32": ["--model", os.path.join(scratch, "onnx_fp32.onnx"), *onnx_tiles],
                "onnx_int8": ["--model", os.path.join(scratch, "onnx_int8.onnx"), *onnx_tiles],
            }
            row["predict"] = {}
            for kind, source in sources.items():
                masks = os.path.join(scratch, f"masks_{kind}")
                _, seconds = sh([py, "-m", "segjax.predict", *source, "--input", images,
                                 "--output", masks], log)  # fmt: skip
                scored = os.path.join(scratch, f"score_{kind}.json")
                sh([py, "-m", "segjax.score", "--workdir", workdir, "--split", "test",
                    "--predictions", masks, "--json", scored], log)  # fmt: skip
                with open(scored) as file:
                    s = json.load(file)
                row["predict"][kind] = {
                    "miou": s["miou"],
                    "image_miou": s["image_miou"],
                    "iou/nucleus": s["iou/nucleus"],
                    "seconds": seconds,
                }
            big_out = os.path.join(scratch, "big")
            output, seconds = sh(
                ["/usr/bin/time", "-v", py, "-m", "segjax.predict", "--workdir", workdir,
                 "--input", big, "--output", big_out, "--tile", str(BIG_TILE), "--overlap",
                 str(BIG_OVERLAP), "--batch", "4", "--save", "probs,overlay"], log,
            )  # fmt: skip
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", output).group(1))
            probs = np.load(os.path.join(big_out, "big_3000x4000_probs.npy"))
            row["big_image"] = {
                "size": list(BIG_SIZE),
                "tile": BIG_TILE,
                "overlap": BIG_OVERLAP,
                "seconds": seconds,
                "peak_rss_mib": rss / 1024,
                "edge_jump_ratio": seam_ratio(probs),
                "foreground_fraction": float((probs.argmax(-1) == 1).mean()),
            }
            for suffix in ("", "_overlay"):
                with Image.open(os.path.join(big_out, f"big_3000x4000{suffix}.png")) as image:
                    image.resize((1000, 750), Image.Resampling.NEAREST).save(
                        os.path.join(args.out, f"{name}_big{suffix or '_mask'}_small.png")
                    )
            with open(os.path.join(args.out, "results.json"), "w") as file:
                json.dump(results, file, indent=1)
    write_table(results, args.out)


def write_table(results: dict, out: str) -> None:
    lines = [
        "# DSB 2018 test split: predict, export and int8 against segjax.evaluate",
        "",
        "Written by `experiments/deploy_dsb2018.py` (see its docstring); mIoU pooled over the "
        "split's pixels (set) and averaged over images, nucleus IoU (set). ONNX files at "
        f"{results['onnx_size']}x{results['onnx_size']}, predicted by tiles of that size "
        f"(overlap {OVERLAP}); 'workdir tiled': tiles of {TILE}, overlap {OVERLAP}.",
        "",
        "| run | masks from | mIoU (set) | mIoU (per image) | nucleus IoU | vs evaluate (set) "
        "| predict s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["runs"].items():
        ev = row["evaluate"]
        lines.append(
            f"| {name} | segjax.evaluate | {ev['miou']:.6f} | {ev['image_miou']:.6f} | "
            f"{ev['iou/nucleus']:.6f} | | |"
        )
        for kind, p in row["predict"].items():
            lines.append(
                f"| {name} | predict {kind.replace('_', ' ')} | {p['miou']:.6f} | "
                f"{p['image_miou']:.6f} | {p['iou/nucleus']:.6f} | "
                f"{p['miou'] - ev['miou']:+.2e} | {p['seconds']:.0f} |"
            )
    lines += ["", "int8 against float32, both ONNX with the same tiles:", "",
              "| run | fp32 mIoU | int8 mIoU | int8 - fp32 (points) | fp32 MB | int8 MB | "
              "int8 / fp32 size | StableHLO MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, row in results["runs"].items():
        b, p = row["file_bytes"], row["predict"]
        lines.append(
            f"| {name} | {p['onnx_fp32']['miou']:.4f} | {p['onnx_int8']['miou']:.4f} | "
            f"{100 * (p['onnx_int8']['miou'] - p['onnx_fp32']['miou']):+.2f} | "
            f"{b['onnx_fp32'] / 1e6:.1f} | {b['onnx_int8'] / 1e6:.1f} | "
            f"{b['onnx_int8'] / b['onnx_fp32']:.2f} | {b['stablehlo'] / 1e6:.1f} |"
        )
    lines += ["", "| run | big image | tiles | predict s | peak RSS MiB | edge jump ratio "
              "(rows, columns) | foreground |", "|---|---|---|---:|---:|---|---:|"]  # fmt: skip
    for name, row in results["runs"].items():
        g = row["big_image"]
        ratio = g["edge_jump_ratio"]
        lines.append(
            f"| {name} | {g['size'][0]}x{g['size'][1]} | {g['tile']} / {g['overlap']} | "
            f"{g['seconds']:.0f} | {g['peak_rss_mib']:.0f} | {ratio['rows']:.2f}, "
            f"{ratio['columns']:.2f} | {g['foreground_fraction']:.3f} |"
        )
    with open(os.path.join(out, "results.md"), "w") as file:
        file.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
