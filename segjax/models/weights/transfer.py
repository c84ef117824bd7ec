"""PyTorch state dict <-> segjax variables, for the layouts of ``layouts.py``.

``plan`` lists, for every segjax variable that has a PyTorch counterpart, its key and how the
array is transformed (conv OIHW <-> HWIO, which covers depthwise kernels; Linear (out, in) <->
Dense (in, out); BatchNorm weight/bias/running_mean/running_var <-> scale/bias/mean/var; the
U-Net++ skip order). ``load_weights`` is strict: every missing, unexpected and mis-shaped key is
listed in one error. ``num_batches_tracked`` is ignored on import and written as 0 on export.

An encoder file (a torchvision / timm classifier, or the encoder of an smp model) fills only the
encoder of a segmentation model; its classifier head and the stages a shallower encoder does not
have are left out and reported. ImageNet kernels of the first conv are adapted to another number of
input channels as smp and timm do (``adapt_input_kernel``).
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from segjax.models.encoders.efficientnet_lite import EfficientNetLiteClassifier
from segjax.models.encoders.ghostnet import GhostNetClassifier
from segjax.models.encoders.mobilenet_v2 import MobileNetV2Classifier
from segjax.models.encoders.resnet import ResNetClassifier
from segjax.models.weights import layouts, smp
from segjax.models.weights.files import WeightsFileError
from segjax.models.weights.layouts import encoder_family

SCOPES = ("model", "encoder")
CLASSIFIERS = {
    "resnet": ResNetClassifier,
    "ghostnet": GhostNetClassifier,
    "mobilenet_v2": MobileNetV2Classifier,
    "efficientnet_lite": EfficientNetLiteClassifier,
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One segjax variable and the PyTorch tensor it corresponds to."""

    path: tuple[str, ...]  # ('params', 'encoder', 'conv1', 'kernel')
    key: str  # 'conv1.weight'
    shape: tuple[int, ...]  # segjax's
    permutation: np.ndarray | None = None  # of the channels along ``axis`` (segjax <- torch)
    axis: int = 2  # of the segjax array: a kernel's inputs (2) or outputs (3), a bias (0)

    @property
    def torch_shape(self) -> tuple[int, ...]:
        if len(self.shape) == 4:
            height, width, inputs, outputs = self.shape
            return (outputs, inputs, height, width)
        return tuple(reversed(self.shape)) if len(self.shape) == 2 else self.shape

    def to_segjax(self, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array, np.float32)
        if array.ndim == 4:
            array = array.transpose(2, 3, 1, 0)
        elif array.ndim == 2:
            array = array.T
        if self.permutation is not None:
            array = np.take(array, self.permutation, axis=self.axis)
        return np.ascontiguousarray(array)

    def to_torch(self, array: Any) -> np.ndarray:
        array = np.asarray(array, np.float32)
        if self.permutation is not None:
            array = np.take(array, np.argsort(self.permutation), axis=self.axis)
        if array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)
        elif array.ndim == 2:
            array = array.T
        return np.ascontiguousarray(array)


@dataclasses.dataclass
class Report:
    """What an import did, for the run's log and the convert command."""

    source: str
    holds: str  # describe_file's words
    target: str  # 'the encoder' or 'the whole model'
    tensors: int  # loaded
    parameters: int  # trainable values loaded
    model_parameters: int  # trainable values of the model
    ignored: list[str]
    adapted: str = ""

    def summary(self) -> str:
        text = (
            f"loaded {self.tensors} tensors ({self.parameters:,} of the model's "
            f"{self.model_parameters:,} parameters) into {self.target} from {self.source} "
            f"({self.holds})"
        )
        if self.ignored:
            text += (
                f"; left out {len(self.ignored)} not in this model ({_abbreviate(self.ignored)})"
            )
        if self.adapted:
            text += f"; {self.adapted}"
        return text


def _abbreviate(keys: list[str]) -> str:
    """'fc.*, layer4.*' for the module prefixes of ignored keys."""
    prefixes = []
    for key in keys:
        parts = key.split(".")
        depth = {"decoder": 3, "encoder": 2, "blocks": 2}.get(parts[0], 1)
        prefix = ".".join(parts[:depth])
        if prefix + ".*" not in prefixes:
            prefixes.append(prefix + ".*")
    return ", ".join(prefixes)


def abstract_variables(model: nn.Module, in_channels: int) -> dict:
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, in_channels)), train=False)
    )


def _flat(variables: dict) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(jax.tree.map(lambda x: x, variables))


def is_classifier(model: nn.Module) -> bool:
    return isinstance(model, tuple(CLASSIFIERS.values()))


def plan(
    model: nn.Module, variables: dict, scope: str = "model", layout: str | None = None
) -> list[Entry]:
    """The entries of ``model``'s variables in a layout of its family (``layout``, default the
    family's first: torchvision's or timm's keys): a classifier, a segmentation model in smp's
    keys (``scope='model'``) or only its encoder (``scope='encoder'``). Raises
    ``NoTorchEquivalent`` for a variable the layout has no tensor for."""
    flat = _flat(variables)
    family = encoder_family(model.encoder)
    classifier = is_classifier(model)
    if not classifier and scope == "model":
        smp.check_compatible(model, family)
    num_skip_levels = 0 if classifier else len(model.encoder.channels) - 1
    entries = []
    for path, value in flat.items():
        modules, leaf = tuple(path[1:-1]), path[-1]
        if classifier:
            if scope == "encoder" and modules[0] != "encoder":
                continue
            name = layouts.classifier_module(family, modules, layout)
        elif scope == "encoder":
            if modules[0] != "encoder":
                continue
            name = layouts.encoder_module(family, modules[1:], layout)
        else:
            name = layouts.smp_module(modules, num_skip_levels, family)
        permutation, axis = None, 2
        if not classifier and scope == "model":
            permutation, axis = smp.concat_order(flat, modules, leaf)
        entries.append(
            Entry(
                path,
                f"{name}.{layouts.LEAF_NAMES[leaf]}",
                tuple(value.shape),
                permutation,
                axis,
            )
        )
    keys = [entry.key for entry in entries]
    if len(set(keys)) != len(keys):
        raise layouts.NoTorchEquivalent("two variables map to one PyTorch tensor")
    return entries


def adapt_input_kernel(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """An RGB kernel (O, 3, kh, kw) for ``in_channels`` inputs, as smp's ``patch_first_conv`` and
    timm's ``adapt_input_conv`` do: 1 channel takes the sum over RGB; N channels repeat R, G, B,
    R, ... and scale by 3 / N, so that a constant image gives the same response."""
    if in_channels == 1:
        return kernel.sum(axis=1, keepdims=True)
    repeats = math.ceil(in_channels / kernel.shape[1])
    tiled = np.tile(kernel, (1, repeats, 1, 1))[:, :in_channels]
    return tiled * (kernel.shape[1] / in_channels)


def _tolerated(model: nn.Module, family: str, layout: str, in_channels: int) -> set[str]:
    """Keys an encoder-scope import may leave unused: those of the full ImageNet classifier
    (head, deeper stages) and, from an smp file, its decoder and head."""
    full = CLASSIFIERS[family](model.encoder.clone(parent=None, depth=5))
    prefix = "encoder." if layout == "smp" else ""
    variables = abstract_variables(full, in_channels)
    return {prefix + e.key for e in plan(full, variables, layout=_layout_in_smp(layout, family))}


def _layout_in_smp(layout: str, family: str) -> str:
    """The encoder layout of a file: an smp file's is its family's first."""
    return layouts.FAMILY_LAYOUTS[family][0] if layout == "smp" else layout


def load_weights(
    model: nn.Module,
    variables: dict,
    tensors: dict[str, np.ndarray],
    source: str,
    scope: str | None = None,
    head: bool = True,
) -> tuple[dict, Report]:
    """``variables`` with every tensor of the file in place; strict (one error listing every
    missing, unexpected and mis-shaped key). ``scope``: 'model' (a classifier, or a whole smp
    model) or 'encoder' (only the encoder); None: 'model' for classifiers and smp files, else
    'encoder'. ``head=False`` leaves a classifier's head at its initial values and ignores the
    file's."""
    holds = layouts.describe_file(tensors)
    found = layouts.detect(tensors)
    if found is None:
        first = ", ".join(list(tensors)[:4])
        raise WeightsFileError(f"{source}: holds {holds}; its first keys are {first}")
    layout, file_family = found
    classifier = is_classifier(model)
    family = encoder_family(model.encoder)
    if scope is None:
        scope = "model" if classifier or layout == "smp" else "encoder"
    if scope not in SCOPES:
        raise WeightsFileError(f"scope={scope!r}: choose one of {list(SCOPES)}")
    target_name = _target_name(model)
    if file_family != family or (layout == "smp" and classifier):
        raise WeightsFileError(f"{source}: holds {holds}, which does not fit {target_name}")
    if scope == "model" and not classifier and layout != "smp":
        raise WeightsFileError(
            f"{source}: holds {holds}, an encoder only; it cannot fill the whole of "
            f"{target_name} (use the encoder scope)"
        )
    try:
        entries = plan(model, variables, scope, _layout_in_smp(layout, family))
    except layouts.NoTorchEquivalent as error:
        raise WeightsFileError(f"{target_name} has no {layout} equivalent: {error}") from None
    in_channels = _input_channels(entries)
    tolerated: set[str] = set()
    prefix = ""
    if scope == "encoder":
        tolerated = _tolerated(model, family, layout, in_channels)
        if layout == "smp":
            prefix = "encoder."
            tolerated |= {k for k in tensors if k.startswith(("decoder.", "segmentation_head."))}
    if scope == "model" and layout == "smp":
        tolerated |= set(smp.never_run(model, variables))
    if classifier and not head:
        prefixes = layouts.HEAD_PREFIXES[(family, layout)]
        head_keys = {e.key for e in entries if e.key.startswith(prefixes)}
        entries = [e for e in entries if e.key not in head_keys]
        tolerated |= head_keys
    entries = [dataclasses.replace(e, key=prefix + e.key) for e in entries]
    return _apply(model, variables, tensors, entries, tolerated, source, holds, family, scope)


def encoder_name(encoder: nn.Module) -> str:
    """'resnet34', 'ghostnet_100': the registry name of an encoder module."""
    from segjax.models.factory import ENCODERS

    for name, (encoder_cls, _, kwargs) in ENCODERS.items():
        if isinstance(encoder, encoder_cls) and all(
            getattr(encoder, key, None) == value for key, value in kwargs.items()
        ):
            return name
    return type(encoder).__name__


def _target_name(model: nn.Module) -> str:
    encoder = encoder_name(model.encoder)
    if is_classifier(model):
        return f"a {encoder} classifier"
    arch = "U-Net++" if "PlusPlus" in type(model.decoder).__name__ else "U-Net"
    return f"a {arch} on {encoder}"


# The first convolution of each encoder (its kernel is adapted to other input channels).
_FIRST_CONVS = (
    ("encoder", "conv1", "kernel"),
    ("encoder", "conv_stem", "kernel"),
    ("encoder", "features_0", "conv", "kernel"),
    ("encoder", "stem", "conv", "kernel"),
)


def _is_first_conv(entry: Entry) -> bool:
    return entry.path[1:] in _FIRST_CONVS


def _input_channels(entries: list[Entry]) -> int:
    return next((entry.shape[2] for entry in entries if _is_first_conv(entry)), 3)


def _apply(model, variables, tensors, entries, tolerated, source, holds, family, scope):
    planned = {entry.key for entry in entries}
    known_modules = {k.rsplit(".", 1)[0] for k in planned | tolerated}
    missing = [entry.key for entry in entries if entry.key not in tensors]
    unexpected = [
        key
        for key in tensors
        if key not in planned
        and key not in tolerated
        and not (key.endswith(".num_batches_tracked") and key.rsplit(".", 1)[0] in known_modules)
    ]
    misshaped, adapted = [], ""
    for entry in entries:
        if entry.key not in tensors:
            continue
        shape = tuple(tensors[entry.key].shape)
        if shape == entry.torch_shape:
            continue
        if _is_first_conv(entry) and _adaptable(shape, entry.torch_shape):
            how = "summed" if entry.torch_shape[1] == 1 else "repeated and scaled by 3/N"
            adapted = f"first conv adapted from 3 to {entry.torch_shape[1]} input channels ({how})"
            continue
        misshaped.append(_misshaped(entry.key, shape, entry.torch_shape))
    if missing or unexpected or misshaped:
        raise WeightsFileError(
            f"{source}: holds {holds}, which does not fit {_target_name(model)}; "
            + _mismatches(missing, unexpected, misshaped)
        )
    check_floating(source, {entry.key: tensors[entry.key] for entry in entries})
    flat = _flat(variables)
    loaded_parameters = 0
    for entry in entries:
        array = tensors[entry.key]
        if array.shape != entry.torch_shape:
            array = adapt_input_kernel(np.asarray(array, np.float32), entry.torch_shape[1])
        flat[entry.path] = entry.to_segjax(array)
        if entry.path[0] == "params":
            loaded_parameters += int(np.prod(entry.shape))
    used = planned | {k for k in tensors if k.endswith(".num_batches_tracked")}
    ignored = sorted(k for k in tensors if k not in used)
    model_parameters = sum(int(np.prod(v.shape)) for p, v in flat.items() if p[0] == "params")
    report = Report(
        source,
        holds,
        "the encoder" if scope == "encoder" else "the whole model",
        len(entries),
        loaded_parameters,
        model_parameters,
        ignored,
        adapted,
    )
    return traverse_util.unflatten_dict(flat), report


def _misshaped(key: str, in_file: tuple, in_model: tuple) -> str:
    return f"{key} (file {'x'.join(map(str, in_file))}, model {'x'.join(map(str, in_model))})"


def check_floating(source: str, tensors: dict[str, np.ndarray]) -> None:
    """Weights must be floating point (float16, bfloat16, float32 and float64 convert to the
    model's float32); an integer or boolean tensor is a file of something else."""
    for key, array in tensors.items():
        if not (np.issubdtype(array.dtype, np.floating) or array.dtype == ml_dtypes.bfloat16):
            raise WeightsFileError(
                f"{source}: tensor {key} is {array.dtype}, not floating point; weights must be "
                "float16, bfloat16, float32 or float64"
            )


def _mismatches(missing: list[str], unexpected: list[str], misshaped: list[str]) -> str:
    """'3 missing: a, b, c; 1 mis-shaped: ...': every key, on one line."""
    groups = (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
    return "; ".join(f"{len(keys)} {name}: {', '.join(keys)}" for name, keys in groups if keys)


def _adaptable(file_shape: tuple, model_shape: tuple) -> bool:
    return (
        len(file_shape) == 4
        and file_shape[1] == 3
        and file_shape[0] == model_shape[0]
        and file_shape[2:] == model_shape[2:]
    )


def export_state_dict(
    model: nn.Module, variables: dict, scope: str = "model"
) -> tuple[dict[str, np.ndarray], str]:
    """(a PyTorch state dict, its layout): a classifier in torchvision's / timm's keys, a
    segmentation model in smp's (``scope='model'``) or its encoder in torchvision's / timm's
    (``scope='encoder'``). BatchNorm layers get ``num_batches_tracked`` = 0, so that
    ``load_state_dict(strict=True)`` accepts the file."""
    classifier = is_classifier(model)
    family = encoder_family(model.encoder)
    try:
        entries = plan(model, variables, scope)
    except layouts.NoTorchEquivalent as error:
        raise WeightsFileError(
            f"{_target_name(model)} has no PyTorch equivalent: {error}"
        ) from None
    layout = "smp" if scope == "model" and not classifier else layouts.FAMILY_LAYOUTS[family][0]
    flat = _flat(variables)
    tensors: dict[str, np.ndarray] = {}
    for entry in entries:
        key = entry.key
        tensors[key] = entry.to_torch(flat[entry.path])
        if key.endswith(".running_var"):
            tensors[key.replace(".running_var", ".num_batches_tracked")] = np.array(0, np.int64)
    if layout == "smp":
        tensors.update(smp.never_run(model, variables))
    return tensors, layout


SEGJAX_FORMAT = "segjax"


def segjax_tensors(variables: dict) -> dict[str, np.ndarray]:
    """segjax's own layout: every variable under its '/'-joined path ('params/encoder/...')."""
    return {"/".join(path): np.asarray(value) for path, value in _flat(variables).items()}


def load_segjax_weights(
    variables: dict, tensors: dict[str, np.ndarray], source: str, scope: str = "model"
) -> tuple[dict, int]:
    """``variables`` with a segjax-layout file's tensors in place (all of them, or the
    ``encoder`` sub-tree's): strict like ``load_weights``. Returns (variables, tensors loaded)."""
    flat = _flat(variables)
    wanted = {"/".join(p): p for p in flat if scope == "model" or p[1] == "encoder"}
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(k for k in tensors if k not in wanted and scope == "model")
    misshaped = [
        _misshaped(k, tensors[k].shape, flat[wanted[k]].shape)
        for k in sorted(set(wanted) & set(tensors))
        if tuple(tensors[k].shape) != tuple(flat[wanted[k]].shape)
    ]
    if missing or unexpected or misshaped:
        raise WeightsFileError(
            f"{source}: segjax weights that do not fit this model; "
            + _mismatches(missing, unexpected, misshaped)
        )
    check_floating(source, {key: tensors[key] for key in wanted})
    for key, path in wanted.items():
        flat[path] = np.asarray(tensors[key], flat[path].dtype)
    return traverse_util.unflatten_dict(flat), len(wanted)
