"""int8 ONNX models: onnxruntime's static quantisation in QDQ form, calibrated on images.

Weights are quantised per output channel (int8, symmetric), activations per tensor (uint8,
asymmetric) from their min/max over the calibration inputs, or from a percentile of them: crops
of the model's input size from training images, preprocessed exactly as ``segjax.predict`` feeds
the model (normalised, zero padding at the bottom and right where an image is smaller than the
input). Before quantising, onnxruntime's pre-processing folds each BatchNorm's scale and shift
into the convolution before it, so the int8 convolutions carry them.

Min/max ranges lose least where activations have no rare outliers; where a few images drive some
far beyond the rest (up to 160x their 99.9th percentile, on 2 of 32 images, in one U-Net/ResNet-34
run), every other value gets a level or two and the model collapses. The 99.9th percentile clips
them, at a cost of up to 0.7 points of test IoU where min/max had nothing to clip (the founding
grid, ``experiments/founding/NOTES.md``); ``agreement`` tells the two cases apart on the
calibration images themselves.

The convolutions next to the input (they see the image) and next to the output (the logits) stay
float32: they hold a small share of the MACs (the ResNet-34 U-Net's 7x7 stem: 2% at 256x256), and
quantising them cost the most accuracy. On DSB 2018's test split (U-Net/GhostNet-1.0, 256x256 tiles)
mIoU was 0.8276 in float32, 0.8066 with every convolution in int8, 0.8232 with the first kept in
float32, 0.8071 with the last, 0.8234 with both; percentile calibration instead of min/max gave
0.8146.
"""

import contextlib
import io
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from segjax.data.augment import normalize
from segjax.errors import UserError


def calibration_inputs(
    images: Iterable[np.ndarray],
    size: tuple[int, int],
    mean,
    std,
    layout: str = "nhwc",
    count: int = 32,
    seed: int = 0,
) -> list[np.ndarray]:
    """Up to ``count`` (1, H, W, C) (or NCHW) float32 inputs: one random ``size`` crop of each
    uint8 (h, w, C) image, padded with zeros where the image is smaller."""
    rng = np.random.default_rng(seed)
    height, width = size
    inputs = []
    for image in images:
        if len(inputs) == count:
            break
        top = int(rng.integers(0, max(image.shape[0] - height, 0) + 1))
        left = int(rng.integers(0, max(image.shape[1] - width, 0) + 1))
        crop = normalize(image[top : top + height, left : left + width], mean, std)
        pad = ((0, height - crop.shape[0]), (0, width - crop.shape[1]), (0, 0))
        x = np.pad(crop, pad)[None].astype(np.float32)
        inputs.append(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "nchw" else x))
    if not inputs:
        raise UserError("int8 calibration: no images to calibrate on")
    return inputs


def prepared_graph(model: bytes):
    """The float32 ONNX ``model`` as the quantiser sees it: onnxruntime's pre-processing
    (shapes inferred, BatchNorm folded into the convolution before it), every node named (keeping
    a node in float32 goes by its name)."""
    import onnx
    from onnxruntime import quantization

    with tempfile.TemporaryDirectory(prefix="segjax-int8-") as scratch:
        fp32 = os.path.join(scratch, "fp32.onnx")
        prepared = os.path.join(scratch, "prepared.onnx")
        with open(fp32, "wb") as file:
            file.write(model)
        try:
            # When it fails, onnxruntime's symbolic shape inference dumps the model (tens of MB)
            # into the working directory: there, the scratch one.
            with contextlib.chdir(scratch):
                quantization.quant_pre_process(fp32, prepared)
        except Exception as error:
            # It gives up on a transposed convolution whose kernel jax2onnx flips with a Slice
            # (the paper U-Net's upsampling); the shapes are static, so ONNX's own inference,
            # which still runs, is enough.
            if "symbolic shape inference" not in str(error):
                raise
            quantization.quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        graph = onnx.load(prepared)
    for index, node in enumerate(graph.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    return graph


def quantize_int8(
    model: bytes,
    inputs: list[np.ndarray],
    keep_float: Iterable[str] = (),
    percentile: float | None = None,
) -> bytes:
    """The int8 (QDQ) form of the float32 ONNX ``model``, calibrated on ``inputs``.

    ``keep_float``: names of nodes of ``prepared_graph(model)`` left in float32 besides the
    boundary convolutions; ``percentile``: activation ranges from that percentile of the
    calibration values (e.g. 99.99) instead of their min/max.
    """
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError:
        raise UserError("--int8 needs onnxruntime and onnx: pip install -e '.[deploy]'") from None

    if percentile is not None and not 50 < percentile <= 100:
        raise UserError(f"int8: percentile {percentile:g} is not in (50, 100]")
    name = onnx.load_from_string(model).graph.input[0].name

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self._inputs = iter(inputs)

        def get_next(self):
            x = next(self._inputs, None)
            return None if x is None else {name: x}

    graph = prepared_graph(model)
    calibration = {"calibrate_method": quantization.CalibrationMethod.MinMax}
    if percentile is not None:
        calibration = {
            "calibrate_method": quantization.CalibrationMethod.Percentile,
            "extra_options": {"CalibPercentile": percentile},
        }
    with tempfile.TemporaryDirectory(prefix="segjax-int8-") as scratch:
        prepared = os.path.join(scratch, "prepared.onnx")
        int8 = os.path.join(scratch, "int8.onnx")
        onnx.save(graph, prepared)
        # (histogram calibration prints its progress to stdout)
        with contextlib.redirect_stdout(io.StringIO()):
            quantization.quantize_static(
                prepared,
                int8,
                Reader(),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                nodes_to_exclude=sorted(set(boundary_convs(graph.graph)) | set(keep_float)),
                **calibration,
            )
        with open(int8, "rb") as file:
            quantized = file.read()
    check_scales(onnx.load_from_string(quantized))
    return quantized


def boundary_convs(graph) -> list[str]:
    """Names of the Conv nodes with no other Conv between them and the graph's input or one of
    its outputs."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def nearest_convs(tensors, forward: bool) -> set[str]:
        found, seen, stack = set(), set(), list(tensors)
        while stack:
            tensor = stack.pop()
            nodes = consumers[tensor] if forward else [producers[tensor]] * (tensor in producers)
            for node in nodes:
                if node.name in seen:
                    continue
                seen.add(node.name)
                if node.op_type == "Conv":
                    found.add(node.name)
                else:
                    stack.extend(node.output if forward else node.input)
        return found

    first = nearest_convs([i.name for i in graph.input], forward=True)
    last = nearest_convs([o.name for o in graph.output], forward=False)
    return sorted(first | last)


def agreement(fp32: bytes, int8: bytes, inputs: list[np.ndarray], class_axis: int = -1) -> float:
    """How far the int8 model's classes on ``inputs`` (argmax over ``class_axis``) match the
    float32 model's: their IoU, class by class, averaged over the classes float32 predicts.
    An IoU, not the share of equal pixels, which a model that collapsed to the background still
    scores highly on. A collapse shows here, on the calibration images themselves: U-Net/ResNet-34
    on DSB 2018, a run whose activations reached 150x their 99.9th percentile on 2 of 32
    calibration images, lost 72 of 82 points of test nucleus IoU with min/max ranges and 0.1
    with percentile 99.9."""
    import onnxruntime

    def classes(model: bytes) -> np.ndarray:
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.stack([session.run(None, {name: x})[0].argmax(class_axis) for x in inputs])

    reference, quantised = classes(fp32), classes(int8)
    ious = [
        np.sum((reference == c) & (quantised == c)) / np.sum((reference == c) | (quantised == c))
        for c in np.unique(reference)
    ]
    return float(np.mean(ious))


def check_scales(model) -> None:
    """Refuses a quantised model with a non-finite or zero scale (a tensor whose calibrated
    range was infinite, e.g. -inf padding): its int8 outputs would be garbage."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    bad = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in initializers:
            scale = numpy_helper.to_array(initializers[node.input[1]])
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                bad.append(f"{node.input[0]} (scale {scale.ravel()[:1]})")
    if bad:
        raise UserError(
            f"int8: {len(bad)} tensors have no finite quantisation range: {', '.join(bad[:5])}"
            " (an infinite value in the model's activations); keep this model in float32"
        )
