"""Exports a trained run for deployment: StableHLO (``jax.export``) or ONNX (jax2onnx), each
with a JSON sidecar (``FILE.json``) that says what a deployer needs.

    python -m segjax.export --workdir runs/x --format stablehlo --output unet.stablehlo
    python -m segjax.export --workdir runs/x --format onnx --output unet.onnx --size 256
    python -m segjax.export --workdir runs/x --format onnx --output unet_int8.onnx --int8

StableHLO: weights embedded, batch, height and width symbolic; height and width must be multiples of
the model's size multiple (32 for a depth-5 encoder; ``multiple`` in the sidecar); other sizes are
refused when called (pad the image, as ``segjax.predict`` does). ONNX (``pip install -e
'.[deploy]'``): dynamic batch, height and width fixed by ``--size`` (jax2onnx does not carry
symbolic spatial sizes through the decoder's concatenations), so larger images go by tiles of that
size; ``--int8`` quantises it (``segjax.quantize``), calibrated on training images (activation
ranges from their min/max, or ``--int8_percentile``), and reports how well the int8 model's
classes match float32's on those images, warning when a few outliers may have ruined it. The
output is the model's logits; a deep-supervised model in 'accurate' mode gives the log of its
heads' mean probabilities (same argmax as its evaluation), in 'fast' mode its last head's logits.

A Mask R-CNN run exports its detections (``DETECTION_OUTPUTS``: boxes, scores, classes, 28x28
masks, valid flags; ``max_detections`` slots) for one image of ``--size`` per call, in both
formats: its anchors and every count follow from the input's size, so nothing is symbolic.
``segjax.predict --model`` pastes them into label maps as it does for the run itself.
"""

import contextlib
import hashlib
import io
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from segjax import cli
from segjax.data.augment import statistics
from segjax.detection.label_maps import MASK_THRESHOLD, SCORE_THRESHOLD
from segjax.errors import UserError
from segjax.files import write_atomically
from segjax.inference import Restored, restore
from segjax.losses import head_probabilities
from segjax.models import is_instance_model

FORMATS = ("stablehlo", "onnx")
LAYOUTS = ("nhwc", "nchw")
# What an exported Mask R-CNN returns, in this order (segjax.models.detection.maskrcnn).
DETECTION_OUTPUTS = ("boxes", "scores", "classes", "masks", "valid")


def output_meaning(restored: Restored) -> str:
    if restored.model.deep_supervision and restored.config.deep_supervision_mode == "accurate":
        return "log_probabilities"
    return "logits"


# Exported graphs use the standard convolution formulation (grouped Conv nodes), which other
# runtimes run fast, not XLA:CPU's fused depthwise and 1x1 forms (segjax.models.conv_ops).
EXPORT_CONV_IMPL = "lax"
# --int8 warns when its classes match float32's on the calibration images at a mean IoU below
# this: on the founding grid's U-Nets (DSB 2018), the int8 models within 0.4 points of float32
# on the test split matched at 0.978-0.995, the two that lost 5.9 and 72 points at 0.917 and 0.488.
AGREEMENT_WARNING = 0.95


def export_function(restored: Restored, layout: str = "nhwc", conv_impl: str | None = None):
    """images -> logits (or log-probabilities, see ``output_meaning``) in ``layout``, with the
    weights as constants; convolutions as the model computes them unless ``conv_impl`` says."""
    model, variables = restored.model, restored.variables
    if conv_impl is not None:
        model = model.clone(conv_impl=conv_impl)
    accurate = output_meaning(restored) == "log_probabilities"

    def forward(x):
        if layout == "nchw":
            x = jnp.transpose(x, (0, 2, 3, 1))
        out = model.apply(variables, x, train=False)
        if isinstance(out, list):
            out = jnp.log(head_probabilities(out, "accurate")) if accurate else out[-1]
        out = out.astype(jnp.float32)
        return jnp.transpose(out, (0, 3, 1, 2)) if layout == "nchw" else out

    return forward


def detection_function(restored: Restored, layout: str = "nhwc", conv_impl: str | None = None):
    """images (one, in ``layout``) -> the tuple ``DETECTION_OUTPUTS`` of a Mask R-CNN run."""
    model, variables = restored.model, restored.variables
    if conv_impl is not None:
        model = model.clone(conv_impl=conv_impl)

    def forward(x):
        if layout == "nchw":
            x = jnp.transpose(x, (0, 2, 3, 1))
        out = model.apply(variables, x, train=False)
        return tuple(out[name] for name in DETECTION_OUTPUTS)

    return forward


def normalisation(restored: Restored) -> tuple[list[float], list[float]]:
    """The mean and std the run normalises with (ImageNet's unless config.data sets them)."""
    data = restored.config.data
    mean, std = statistics(restored.channels, tuple(data.mean), tuple(data.std))
    return list(mean), list(std)


def sidecar(restored: Restored, fmt: str, layout: str, workdir: str, size=None) -> dict:
    mean, std = normalisation(restored)
    channels, multiple = restored.channels, restored.multiple
    spatial = list(size) if size else [f"{multiple}*h", f"{multiple}*w"]
    detector = is_instance_model(restored.model)
    batch = 1 if detector else "batch"
    shape = [batch, *spatial, channels] if layout == "nhwc" else [batch, channels, *spatial]
    config = restored.config
    output = (
        detection_sidecar(restored)
        if detector
        else {
            "layout": layout,
            "dtype": "float32",
            "meaning": output_meaning(restored),
            "classes": list(restored.class_names),
            "prediction": "argmax over the class axis",
        }
    )
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
        "output": output,
        "eval_size": list(config.data.eval_size),  # [] or the size the run predicts at
        "model": {
            "arch": config.model.arch,
            "encoder": config.model.encoder,
            "step": restored.step,
            "workdir": os.path.abspath(workdir),
        },
    }


def detection_sidecar(restored: Restored) -> dict:
    slots = restored.model.settings.max_detections
    return {
        "meaning": "detections",
        "names": list(DETECTION_OUTPUTS),
        "tensors": {
            "boxes": f"float32 (1, {slots}, 4): x0, y0, x1, y1 in input pixels",
            "scores": f"float32 (1, {slots}): the detection's class probability",
            "classes": f"int32 (1, {slots}): 1..K, an index into classes",
            "masks": f"float32 (1, {slots}, 28, 28): the object's probability over its box",
            "valid": f"bool (1, {slots}): the slots holding a detection, best first",
        },
        "classes": list(restored.class_names),
        "prediction": "valid detections pasted into a label map best first, each where its mask "
        f"(resized to its box) is at least {MASK_THRESHOLD}; segjax.predict leaves out those "
        f"scoring below --score_threshold ({SCORE_THRESHOLD} by default)",
    }


def _one_image(restored: Restored, size: tuple[int, int], layout: str) -> np.ndarray:
    height, width, c = *size, restored.channels
    return np.zeros((1, height, width, c) if layout == "nhwc" else (1, c, height, width), "f4")


def export_stablehlo(restored: Restored, layout: str = "nhwc", size=None) -> bytes:
    """Serialized ``jax.export`` of the model (weights embedded): symbolic batch and sizes, or
    for a Mask R-CNN one image of ``size``."""
    from jax import export

    if is_instance_model(restored.model):
        forward = detection_function(restored, layout, EXPORT_CONV_IMPL)
        return bytes(
            export.export(jax.jit(forward))(_one_image(restored, size, layout)).serialize()
        )
    m, c = restored.multiple, restored.channels
    spec = f"b, {m}*h, {m}*w, {c}" if layout == "nhwc" else f"b, {c}, {m}*h, {m}*w"
    shape = export.symbolic_shape(spec)
    exported = export.export(jax.jit(export_function(restored, layout, EXPORT_CONV_IMPL)))(
        jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    return bytes(exported.serialize())


def export_onnx(restored: Restored, size: tuple[int, int], layout: str = "nhwc") -> bytes:
    # jax2onnx 0.13 prints debug lines for every flax Conv and logs a traceback for each of its
    # plugins that does not import under this jax (dm_pix ones, unused here), and onnx_ir warns
    # about untyped shape constants: kept off the console. Errors still raise.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from jax2onnx import to_onnx
        except ImportError:
            raise UserError(
                "--format onnx needs jax2onnx and onnxruntime: pip install -e '.[deploy]'"
            ) from None
    if is_instance_model(restored.model):
        from segjax.onnx_compat import traced_to_onnx

        forward = detection_function(restored, layout, EXPORT_CONV_IMPL)
        example = _one_image(restored, size, layout)
        proto = traced_to_onnx(forward, example, "images", list(DETECTION_OUTPUTS))
        del proto.graph.value_info[:]  # as below
        return proto.SerializeToString()
    with contextlib.redirect_stdout(io.StringIO()):
        height, width = size
        c = restored.channels
        shape = ("B", height, width, c) if layout == "nhwc" else ("B", c, height, width)
        forward = export_function(restored, layout, EXPORT_CONV_IMPL)
        proto = to_onnx(forward, [shape], model_name="segjax")
    # jax2onnx's intermediate shape annotations give some tensors in the wrong layout (NHWC for
    # NCHW), which onnxruntime warns about when it merges them with its own inference: drop them.
    del proto.graph.value_info[:]
    clips_from_max_min(proto.graph)
    return proto.SerializeToString()


def clips_from_max_min(graph) -> int:
    """Rewrites each ``Min(Max(x, a), b)`` with scalar constants ``a`` and ``b`` (jax2onnx's
    relu6, and so the hard sigmoid) as ``Clip(x, a, b)``; returns how many.

    The same function in one node instead of two, and the one onnxruntime's int8 quantiser knows:
    it quantises a Conv followed by a Clip at the Clip's output range, but a Conv followed by
    Max and Min at the Conv's own, pre-activation range, which for MobileNetV2's BatchNorm-folded
    depthwise convolutions is wide enough to cost 11.6 points of test nucleus IoU (founding grid,
    U-Net/MobileNetV2 seed 0: 0.8329 float32, 0.7169 int8; with Clip 0.8281)."""
    from onnx import numpy_helper

    scalars = {
        t.name: float(numpy_helper.to_array(t))
        for t in graph.initializer
        if not t.dims and t.data_type == 1  # float32 scalars
    }
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def split(node):  # (the variable input, the constant one) of a binary Max or Min
        if len(node.input) != 2:
            return None
        first, second = node.input
        if second in scalars and first not in scalars:
            return first, second
        if first in scalars and second not in scalars:
            return second, first
        return None

    rewritten, drop = [], set()  # drop: the output names of the Min nodes folded into a Clip
    for node in graph.node:
        if node.op_type == "Min" and node.output[0] in drop:
            continue
        lower = split(node) if node.op_type == "Max" else None
        after = consumers.get(node.output[0], []) if lower else []
        upper = split(after[0]) if len(after) == 1 and after[0].op_type == "Min" else None
        if upper is None or node.output[0] in outputs or scalars[lower[1]] > scalars[upper[1]]:
            rewritten.append(node)
            continue
        clip = type(node)()
        clip.op_type, clip.name = "Clip", f"{after[0].name}_clip"
        clip.input.extend([lower[0], lower[1], upper[1]])
        clip.output.extend(after[0].output)
        rewritten.append(clip)
        drop.add(after[0].output[0])
    del graph.node[:]
    graph.node.extend(rewritten)
    return len(drop)


def calibration_images(restored: Restored, pattern: str, count: int, seed: int = 0):
    """uint8 images to calibrate int8 on: ``pattern``'s files (``--calibration_input``), or
    ``count`` of the run's training images chosen at random (this reads the run's data)."""
    if pattern:
        from segjax.data.images import find_inputs, load_image

        paths = find_inputs(pattern)
        order = np.random.default_rng(seed).permutation(len(paths))[:count]
        return [load_image(paths[i], restored.channels) for i in order], pattern
    from segjax.data import load_dataset

    source = load_dataset(restored.config.data).split("train")
    order = np.random.default_rng(seed).permutation(len(source))[:count]
    return (source[int(i)]["image"] for i in order), "the run's training split"


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the trained run's directory")
    flags.DEFINE_enum("format", None, list(FORMATS), "stablehlo or onnx")
    flags.DEFINE_string("output", None, "the file to write (and OUTPUT.json beside it)")
    flags.DEFINE_string("checkpoint", "best", "best, latest or a step number")
    flags.DEFINE_enum("layout", "nhwc", list(LAYOUTS), "input and output layout")
    flags.DEFINE_string(
        "size",
        "256",
        "onnx, and Mask R-CNN runs in both formats: the input's HxW (a multiple of the model's; "
        "a Mask R-CNN's should hold the largest image it will see, smaller ones are padded)",
    )
    flags.DEFINE_bool("int8", False, "onnx: quantise to int8 (static, QDQ), calibrated")
    flags.DEFINE_integer("calibration_images", 32, "--int8: how many images to calibrate on")
    flags.DEFINE_float(
        "int8_percentile",
        None,
        "--int8: activation ranges from this percentile of the calibration values (e.g. 99.9) "
        "instead of their min/max",
    )
    flags.DEFINE_string(
        "calibration_input",
        "",
        "--int8: images to calibrate on (default: the run's training split)",
    )


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdir", "format", "output")
    args = flags.FLAGS
    if args.int8 and args.format != "onnx":
        raise UserError("--int8 quantises ONNX models: use it with --format onnx")
    if args.calibration_images < 1:
        raise UserError(f"--calibration_images={args.calibration_images} must be at least 1")
    if args.int8_percentile is not None and not args.int8:
        raise UserError("--int8_percentile calibrates an int8 model: use it with --int8")
    if args.int8_percentile is not None and not 50 < args.int8_percentile <= 100:
        raise UserError(f"--int8_percentile={args.int8_percentile:g} must be in (50, 100]")
    cli.check_output(args.output, "file")  # before the model is restored and converted
    restored = restore(args.workdir, args.checkpoint)
    model = restored.config.model
    detector = is_instance_model(restored.model)
    if detector and args.int8:
        raise UserError(
            f"--int8: {args.workdir} is a {model.arch} (instance segmentation) run; int8 "
            "quantises semantic models only (export it in float32, without --int8)"
        )
    print(
        f"exporting {model.arch} / {model.encoder or 'plain'} (step {restored.step}) to "
        f"{args.format} ...",
        flush=True,
    )
    if args.format == "stablehlo" and not detector:
        blob, size = export_stablehlo(restored, args.layout), None
    elif args.format == "stablehlo":
        size = cli.parse_size(args.size, restored.multiple)
        blob = export_stablehlo(restored, args.layout, size)
    else:
        size = cli.parse_size(args.size, restored.multiple)
        blob = export_onnx(restored, size, args.layout)
    info = sidecar(restored, args.format, args.layout, args.workdir, size)
    if args.int8:
        from segjax.quantize import agreement, calibration_inputs, quantize_int8

        images, source = calibration_images(
            restored, args.calibration_input, args.calibration_images
        )
        print(f"int8: calibrating on {args.calibration_images} crops of {source} ...", flush=True)
        mean, std = normalisation(restored)
        inputs = calibration_inputs(images, size, mean, std, args.layout, args.calibration_images)
        fp32, blob = blob, quantize_int8(blob, inputs, percentile=args.int8_percentile)
        ranges = (
            "min/max" if args.int8_percentile is None else f"percentile {args.int8_percentile:g}"
        )
        agrees = agreement(fp32, blob, inputs, 1 if args.layout == "nchw" else -1)
        print(f"int8: its classes match float32's at mIoU {agrees:.3f} on the calibration images")
        if agrees < AGREEMENT_WARNING:
            hint = "--int8_percentile 99.9" if args.int8_percentile is None else "float32"
            print(
                f"warning: int8 matches float32 at mIoU {agrees:.3f} < {AGREEMENT_WARNING} on "
                "its own calibration images: a few outlying activations may have set its ranges; "
                f"try {hint}, and score the file on validation images before deploying it",
                flush=True,
            )
        info["quantization"] = {
            "type": "int8 static QDQ (onnxruntime): weights int8 per channel, activations "
            f"uint8 per tensor ({ranges})",
            "calibration": f"{len(inputs)} random {size[0]}x{size[1]} crops of {source}",
            "miou_against_float32": round(agrees, 6),
            "float32_bytes": len(fp32),
        }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    # The sidecar names the model file by its digest, and an old sidecar goes first: a model
    # and a sidecar of two exports (one of them killed midway) cannot be taken as a pair.
    info["file_sha256"] = hashlib.sha256(blob).hexdigest()
    if os.path.exists(args.output + ".json"):
        os.remove(args.output + ".json")
    write_atomically(args.output, blob)
    write_atomically(args.output + ".json", json.dumps(info, indent=2) + "\n")
    print(
        f"wrote {args.output} ({len(blob) / 1e6:.1f} MB, {args.format}"
        + (" int8" if args.int8 else "")
        + f", {args.layout}, step "
        f"{restored.step}) and {args.output}.json"
    )
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
