"""Class probabilities of a trained run for images of any size: whole, or by overlapping tiles
(``segjax.tiling``), optionally averaged over flips (test-time augmentation).

Preprocessing comes from the run's config.json (channels, mean/std, and ``data.eval_size``: a run
evaluated at a fixed size predicts at that size, its probabilities resized back bilinearly) and
its dataset record (class names, from ``dataset.json``: the data need not be present), never
re-typed. Inputs are zero-padded at the bottom and right to the model's size multiple before the
jitted forward pass, exactly as the model would pad them itself, so images of similar sizes share
one compilation.

JAX is imported only by the functions that run a model in JAX (``restore``, ``load_predictor``,
the StableHLO reader): predicting with an exported ONNX file needs NumPy, Pillow and onnxruntime
alone (``tests/test_predict.py`` runs it with JAX, grain and TFDS unimportable).
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from segjax.data.augment import normalize
from segjax.errors import UserError
from segjax.tiling import predict_tiled

TTA_MODES = ("", "flips")
REFERENCE_SIZE = 256  # where a pass's memory is measured, per pixel
# (axes flipped) of each test-time augmentation; each is its own inverse.
_FLIPS = ((), (1,), (0,), (0, 1))


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A restored run ready to predict: ``probabilities(images)`` maps normalised (B, H, W,
    channels) float32 images to (B, H, W, classes) probabilities."""

    probabilities: Callable[[np.ndarray], np.ndarray]
    class_names: tuple[str, ...]
    channels: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    multiple: int  # inputs are padded to a multiple of this
    step: int
    eval_size: tuple[int, int] | None = None  # (height, width) the run evaluates at
    fixed_size: tuple[int, int] | None = None  # an exported model's only input size
    # Bytes a forward pass needs per input pixel (``memory_budget``), where it can be known.
    bytes_per_pixel: Callable[[], float] | None = None
    # (height, width) the model was trained at when it trained on whole images resized to it
    # (``data.augment.whole_image``): the scale it knows; None when it trained on crops at the
    # images' own scale.
    train_size: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Restored:
    """A trained run's model, weights and preprocessing, as export and predict need them."""

    model: object
    variables: dict
    config: object
    class_names: tuple[str, ...]
    channels: int
    multiple: int
    step: int


def restore(workdir: str, which: str = "best") -> Restored:
    from segjax.runs import restore_for_evaluation

    run, state, step = restore_for_evaluation(workdir, which, need_data=False)
    model = run.model
    return Restored(
        model=model,
        variables=state.variables,
        config=run.config,
        class_names=tuple(run.dataset.class_names),
        channels=int(run.input_shape[-1]),
        multiple=int(getattr(model, "pad_multiple", None) or model.encoder.strides[-1]),
        step=step,
    )


def inference_function(restored: Restored):
    """images (B, H, W, channels) -> probabilities (B, H, W, classes), jittable."""
    from segjax.losses import head_probabilities

    model, mode = restored.model, restored.config.deep_supervision_mode
    return lambda variables, x: head_probabilities(model.apply(variables, x, train=False), mode)


def load_predictor(workdir: str, which: str = "best") -> Predictor:
    import jax
    import jax.numpy as jnp

    restored = restore(workdir, which)
    forward = jax.jit(inference_function(restored))
    data = restored.config.data

    @functools.cache
    def bytes_per_pixel() -> float:
        """XLA's account of one pass at ``REFERENCE_SIZE`` (inputs, outputs, temporaries; the
        weights do not grow with the image), per pixel: compiled, not run."""
        size = REFERENCE_SIZE + -REFERENCE_SIZE % restored.multiple
        x = jax.ShapeDtypeStruct((1, size, size, restored.channels), jnp.float32)
        memory = forward.lower(restored.variables, x).compile().memory_analysis()
        used = memory.temp_size_in_bytes + memory.output_size_in_bytes + 4 * math.prod(x.shape)
        return used / size**2

    return Predictor(
        probabilities=lambda images: np.asarray(forward(restored.variables, jnp.asarray(images))),
        class_names=restored.class_names,
        channels=restored.channels,
        mean=tuple(data.mean) or None,
        std=tuple(data.std) or None,
        multiple=restored.multiple,
        step=restored.step,
        eval_size=tuple(data.eval_size) or None,
        bytes_per_pixel=bytes_per_pixel,
        train_size=tuple(data.image_size) if data.augment.whole_image else None,
    )


def pad_to(images: np.ndarray, multiple: int, fixed_size: tuple[int, int] | None = None):
    """(images, B x H x W x C) zero-padded at the bottom and right to a multiple of
    ``multiple`` (or to ``fixed_size``); slicing ``[:, :H, :W]`` of an output undoes it, and
    boxes keep their coordinates."""
    height, width = images.shape[1:3]
    target = fixed_size or (height + -height % multiple, width + -width % multiple)
    return np.pad(images, ((0, 0), (0, target[0] - height), (0, target[1] - width), (0, 0)))


def padded(
    predict: Callable[[np.ndarray], np.ndarray],
    multiple: int,
    fixed_size: tuple[int, int] | None = None,
):
    """``predict`` on inputs padded by ``pad_to``, cropped back."""

    def run(images: np.ndarray) -> np.ndarray:
        height, width = images.shape[1:3]
        return predict(pad_to(images, multiple, fixed_size))[:, :height, :width]

    return run


def with_flips(predict: Callable[[np.ndarray], np.ndarray]):
    """The mean of ``predict`` over the image and its horizontal, vertical and double flips."""

    def run(images: np.ndarray) -> np.ndarray:
        total = 0.0
        for axes in _FLIPS:
            spatial = tuple(a + 1 for a in axes)
            flipped = np.flip(images, spatial) if axes else images
            out = predict(np.ascontiguousarray(flipped))
            total = total + (np.flip(out, spatial) if axes else out)
        return total / len(_FLIPS)

    return run


def predict_probabilities(
    predictor: Predictor,
    image: np.ndarray,
    tile: int = 0,
    overlap: int = 64,
    tta: str = "",
    batch: int = 1,
) -> np.ndarray:
    """(H, W, classes) probabilities of a uint8 (H, W, channels) image: whole, or by tiles of
    ``tile`` pixels overlapping by ``overlap`` when the image is larger than a tile."""
    size = image.shape[:2]
    if predictor.eval_size and tuple(predictor.eval_size) != size:
        height, width = predictor.eval_size
        resized = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        resized = np.asarray(resized.resize((width, height), Image.Resampling.BILINEAR))
        probs = predict_probabilities(
            dataclasses.replace(predictor, eval_size=None),
            resized.reshape(height, width, -1),
            tile,
            overlap,
            tta,
            batch,
        )
        return resize_probabilities(probs, size)
    x = normalize(image, predictor.mean, predictor.std)
    predict = padded(predictor.probabilities, predictor.multiple, predictor.fixed_size)
    if predictor.fixed_size:  # an exported model of one size: tiles of (at most) that size
        tile = min(tile, *predictor.fixed_size) if tile else min(predictor.fixed_size)
    if tta == "flips":
        predict = with_flips(predict)
    elif tta:
        raise ValueError(f"tta={tta!r}: choose one of {list(TTA_MODES)}")
    if tile and max(x.shape[:2]) > tile:
        return predict_tiled(predict, x, tile, overlap, batch)
    return predict(x[None])[0]


def resize_probabilities(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) probabilities resized bilinearly to ``size`` (each pixel stays a convex
    combination of probability vectors, so it still sums to 1)."""
    height, width = size
    channels = [
        np.asarray(
            Image.fromarray(probs[..., c]).resize((width, height), Image.Resampling.BILINEAR)
        )
        for c in range(probs.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def load_stablehlo(path: str):
    """A callable (images -> outputs) from a file written by ``export_stablehlo``."""
    from jax import export

    with open(path, "rb") as file:
        exported = export.deserialize(bytearray(file.read()))
    return exported.call


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(path: str) -> dict:
    """The sidecar ``path.json`` that ``segjax.export`` wrote beside ``path``, checked to
    describe that very file."""
    import json

    sidecar = f"{path}.json"
    try:
        with open(sidecar) as file:
            info = json.load(file)
        info["input"], info["output"], info["format"]  # noqa: B018 (present, or KeyError)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{sidecar}: the export's sidecar is not readable ({error!r}); it is written by "
            "segjax.export beside the model file"
        ) from None
    digest = info.get("file_sha256")  # sidecars before issue 25 have none
    if digest and _sha256(path) != digest:
        raise UserError(
            f"{path}: its sidecar {sidecar} describes another file (sha256 {digest[:12]}...); "
            "the two come from different exports: export again"
        )
    return info


def exported_detections(info: dict) -> bool:
    """Whether a sidecar describes an exported Mask R-CNN (``segjax.export``'s detections)."""
    return info["output"].get("meaning") == "detections"


def _exported_runner(path: str, fmt: str, spatial, nchw: bool):
    """(x -> the model's outputs as a list of arrays, the fixed input size or None)."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise UserError(
                f"{path}: running ONNX needs onnxruntime: pip install -e '.[deploy]'"
            ) from None
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        shape = session.get_inputs()[0].shape
        actual = shape[2:] if nchw else shape[1:3]
        if [int(v) for v in spatial] != list(actual):
            raise UserError(
                f"{path}: the model takes {actual[0]}x{actual[1]} inputs but its sidecar "
                f"{path}.json says {spatial[0]}x{spatial[1]}; the two come from different "
                "exports: export again"
            )
        return (lambda x: session.run(None, {name: x})), (int(spatial[0]), int(spatial[1]))
    call = load_stablehlo(path)
    fixed = tuple(int(v) for v in spatial) if all(isinstance(v, int) for v in spatial) else None

    def run(x):
        out = call(x)
        return [np.asarray(o) for o in (out if isinstance(out, (tuple, list)) else [out])]

    return run, fixed


@dataclasses.dataclass(frozen=True)
class ExportedDetector:
    """An exported Mask R-CNN: ``detect`` takes one normalised image (1, H, W, C) of exactly
    ``size`` and returns the dict of ``segjax.export.DETECTION_OUTPUTS``."""

    detect: Callable[[np.ndarray], dict]
    size: tuple[int, int]
    class_names: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    multiple: int
    step: int


def _sidecar_fields(path: str, info: dict, read) -> tuple[bool, list, dict]:
    """(NCHW input?, the input's spatial shape, the fields both kinds of export share, plus
    ``read(info)``'s), or the error that names the sidecar."""
    try:
        inputs, outputs = info["input"], info["output"]
        nchw = inputs["layout"] == "nchw"
        spatial = inputs["shape"][2:] if nchw else inputs["shape"][1:3]
        fields = dict(
            class_names=tuple(outputs["classes"]),
            channels=int(inputs["channels"]),
            mean=tuple(inputs["mean"]),
            std=tuple(inputs["std"]),
            multiple=int(inputs["multiple"]),
            step=int(info["model"]["step"]),
            **read(info),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{path}.json: the export's sidecar is not readable ({error!r}); it is written by "
            "segjax.export beside the model file"
        ) from None
    return nchw, spatial, fields


def load_exported_detector(path: str) -> ExportedDetector:
    """An ``ExportedDetector`` for a Mask R-CNN file written by ``segjax.export``."""
    info = read_sidecar(path)
    nchw, spatial, fields = _sidecar_fields(path, info, lambda i: {"names": i["output"]["names"]})
    names = list(fields.pop("names"))
    raw, fixed = _exported_runner(path, info["format"], spatial, nchw)

    def detect(image: np.ndarray) -> dict:
        x = np.ascontiguousarray(image.transpose(0, 3, 1, 2) if nchw else image, np.float32)
        return dict(zip(names, raw(x), strict=True))

    return ExportedDetector(detect=detect, size=fixed, **fields)


def load_exported(path: str) -> Predictor:
    """A ``Predictor`` for a file written by ``segjax.export`` (ONNX through onnxruntime, or
    StableHLO), its preprocessing from the sidecar ``path.json``: no workdir, no dataset."""
    info = read_sidecar(path)

    def semantic(info):
        return {
            "eval_size": tuple(info.get("eval_size") or ()) or None,
            "meaning": info["output"]["meaning"],
        }

    nchw, spatial, options = _sidecar_fields(path, info, semantic)
    meaning = options.pop("meaning")
    fmt = info["format"]
    run, fixed = _exported_runner(path, fmt, spatial, nchw)
    if fmt != "onnx":
        fixed = None  # a semantic StableHLO export takes any multiple of its size

    def raw(x):
        return run(x)[0]

    def probabilities_of(images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2) if nchw else images, np.float32)
        out = raw(x)
        out = out.transpose(0, 2, 3, 1) if nchw else out
        if meaning == "log_probabilities":
            return np.exp(out)
        out = out - out.max(axis=-1, keepdims=True)
        return np.exp(out) / np.exp(out).sum(axis=-1, keepdims=True)

    return Predictor(probabilities=probabilities_of, fixed_size=fixed, **options)
