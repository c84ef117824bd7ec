"""Exports a trained run for deployment: StableHLO (``jax.export``) or ONNX (jax2onnx), each
with a JSON sidecar (``FILE.json``) that says what a deployer needs.

    python -m segjax.export --workdir runs/x --format stablehlo --output unet.stablehlo
    python -m segjax.export --workdir runs/x --format onnx --output unet.onnx --size 256

StableHLO: weights embedded, batch, height and width symbolic; height and width must be multiples
of the model's size multiple (32 for a depth-5 encoder; ``multiple`` in the sidecar); other sizes
are refused when called (pad the image, as ``segjax.predict`` does). ONNX (``pip install -e
'.[deploy]'``): dynamic batch, height and width fixed by ``--size`` (jax2onnx does not carry
symbolic spatial sizes through the decoder's concatenations), so larger images go by tiles of that
size. The output is the model's logits; a deep-supervised model in 'accurate' mode gives the log of
its heads' mean probabilities (same argmax as its evaluation), in 'fast' mode its last head's
logits.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from segjax import cli
from segjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from segjax.errors import UserError
from segjax.files import write_atomically
from segjax.inference import Restored, restore
from segjax.losses import probabilities

FORMATS = ("stablehlo", "onnx")
LAYOUTS = ("nhwc", "nchw")


def output_meaning(restored: Restored) -> str:
    if restored.model.deep_supervision and restored.config.deep_supervision_mode == "accurate":
        return "log_probabilities"
    return "logits"


def export_function(restored: Restored, layout: str = "nhwc"):
    """images -> logits (or log-probabilities, see ``output_meaning``) in ``layout``, with the
    weights as constants."""
    model, variables = restored.model, restored.variables
    accurate = output_meaning(restored) == "log_probabilities"

    def forward(x):
        if layout == "nchw":
            x = jnp.transpose(x, (0, 2, 3, 1))
        out = model.apply(variables, x, train=False)
        if isinstance(out, list):
            out = jnp.log(sum(probabilities(h) for h in out) / len(out)) if accurate else out[-1]
        out = out.astype(jnp.float32)
        return jnp.transpose(out, (0, 3, 1, 2)) if layout == "nchw" else out

    return forward


def normalisation(restored: Restored) -> tuple[list[float], list[float]]:
    """The mean and std the run normalises with (ImageNet's unless config.data sets them)."""
    data, channels = restored.config.data, restored.channels
    if data.mean:
        return list(data.mean), list(data.std)
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [float(np.mean(IMAGENET_MEAN))] * channels, [float(np.mean(IMAGENET_STD))] * channels


def sidecar(restored: Restored, fmt: str, layout: str, workdir: str, size=None) -> dict:
    mean, std = normalisation(restored)
    channels, multiple = restored.channels, restored.multiple
    spatial = list(size) if size else [f"{multiple}*h", f"{multiple}*w"]
    shape = ["batch", *spatial, channels] if layout == "nhwc" else ["batch", channels, *spatial]
    config = restored.config
    return {
        "format": fmt,
        "input": {
            "layout": layout,
            "dtype": "float32",
            "shape": shape,
            "multiple": multiple,
            "preprocessing": "image as float in [0, 1] (pixel / 255), minus mean, over std, per "
            "channel",
            "mean": mean,
            "std": std,
            "channels": channels,
        },
        "output": {
            "layout": layout,
            "dtype": "float32",
            "meaning": output_meaning(restored),
            "classes": list(restored.class_names),
            "prediction": "argmax over the class axis",
        },
        "eval_size": list(config.data.eval_size),  # [] or the size the run predicts at
        "model": {
            "arch": config.model.arch,
            "encoder": config.model.encoder,
            "step": restored.step,
            "workdir": os.path.abspath(workdir),
        },
    }


def export_stablehlo(restored: Restored, layout: str = "nhwc") -> bytes:
    """Serialized ``jax.export`` of the model (weights embedded), symbolic batch and sizes."""
    from jax import export

    m, c = restored.multiple, restored.channels
    spec = f"b, {m}*h, {m}*w, {c}" if layout == "nhwc" else f"b, {c}, {m}*h, {m}*w"
    shape = export.symbolic_shape(spec)
    exported = export.export(jax.jit(export_function(restored, layout)))(
        jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    return bytes(exported.serialize())


def load_stablehlo(path: str):
    """A callable (images -> outputs) from a file written by ``export_stablehlo``."""
    from jax import export

    with open(path, "rb") as file:
        exported = export.deserialize(bytearray(file.read()))
    return exported.call


def export_onnx(restored: Restored, size: tuple[int, int], layout: str = "nhwc") -> bytes:
    try:
        from jax2onnx import to_onnx
    except ImportError:
        raise UserError(
            "--format onnx needs jax2onnx and onnxruntime: pip install -e '.[deploy]'"
        ) from None
    height, width = size
    c = restored.channels
    shape = ("B", height, width, c) if layout == "nhwc" else ("B", c, height, width)
    proto = to_onnx(export_function(restored, layout), [shape], model_name="segjax")
    return proto.SerializeToString()


def parse_size(text: str, multiple: int) -> tuple[int, int]:
    height, _, width = str(text).lower().partition("x")
    try:
        size = int(height), int(width or height)
    except ValueError:
        raise UserError(f"--size={text!r}: expected N or HxW, e.g. 256 or 256x320") from None
    if min(size) < 1 or size[0] % multiple or size[1] % multiple:
        raise UserError(f"--size={text!r}: height and width must be multiples of {multiple}")
    return size


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the trained run's directory")
    flags.DEFINE_enum("format", None, list(FORMATS), "stablehlo or onnx")
    flags.DEFINE_string("output", None, "the file to write (and OUTPUT.json beside it)")
    flags.DEFINE_string("checkpoint", "best", "best, latest or a step number")
    flags.DEFINE_enum("layout", "nhwc", list(LAYOUTS), "input and output layout")
    flags.DEFINE_string("size", "256", "onnx: the input's HxW (a multiple of the model's)")


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdir", "format", "output")
    args = flags.FLAGS
    restored = restore(args.workdir, args.checkpoint)
    if args.format == "stablehlo":
        blob, size = export_stablehlo(restored, args.layout), None
    else:
        size = parse_size(args.size, restored.multiple)
        blob = export_onnx(restored, size, args.layout)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_atomically(args.output, blob)
    info = sidecar(restored, args.format, args.layout, args.workdir, size)
    write_atomically(args.output + ".json", json.dumps(info, indent=2) + "\n")
    print(
        f"wrote {args.output} ({len(blob) / 1e6:.1f} MB, {args.format}, {args.layout}, step "
        f"{restored.step}) and {args.output}.json"
    )
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
