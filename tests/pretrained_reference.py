"""Reference outputs of PyTorch models for the weight-import tests, without downloading weights.

Both sides build the same weights from a seed: ``seeded_state_dict`` draws every tensor of a
state dict from NumPy's generator keyed by (seed, key), with BatchNorm running statistics far from
their defaults. PyTorch (torchvision / timm / smp) runs the model on a seeded input in eval mode;
the fixtures hold the key list and the outputs, so the tests run without torch:

    pip install -e '.[bench]'
    python -m tests.pretrained_reference            # rewrites tests/fixtures/pretrained/
    python -m tests.pretrained_reference --compare  # a table of segjax vs PyTorch, whole outputs
    python -m tests.pretrained_reference --packaged_keys  # the packaged files' key orders

Segmentation outputs are stored at every 4th pixel (the whole output is compared by the live test,
which runs when torch is installed).
"""

import importlib.util
import json
import os
import sys
import zlib

import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pretrained")
SEED = 2026
CLASSIFIER_INPUT = (2, 3, 224, 224)
SEGMENTATION_INPUT = (1, 3, 160, 224)
SUBSAMPLE = 4
CLASSIFIERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "ghostnet_050",
    "ghostnet_100",
    "ghostnet_130",
    "mobilenet_v2",
    "efficientnet_lite0",
    "efficientnet_lite0_smp",
)
SMP_ARCHS = {"unet": "Unet", "unetpp": "UnetPlusPlus"}
# The PyTorch model of each segjax encoder: torchvision's or timm's classifier, and smp's name.
TORCH_CLASSIFIERS = {"efficientnet_lite0": "tf_efficientnet_lite0"}
SMP_ENCODERS = {"efficientnet_lite0_smp": "timm-tf_efficientnet_lite0"}
# name -> (arch, encoder, classes, decoder attention); arch 'classifier' is the encoder's
# ImageNet classifier.
CASES = {
    **{name: ("classifier", name, 1000, "") for name in CLASSIFIERS},
    **{
        f"smp_{arch}_{encoder}_c{classes}": (arch, encoder, classes, "")
        for arch in SMP_ARCHS
        for encoder in ("resnet18", "resnet34", "mobilenet_v2", "efficientnet_lite0_smp")
        for classes in (1, 3)
    },
    **{f"smp_{arch}_resnet18_scse_c2": (arch, "resnet18", 2, "scse") for arch in SMP_ARCHS},
}


# Files in another layout than their PyTorch model's (``segjax.models.weights.packaged``): the
# layout -> (the package file, the case whose model's keys its key order maps onto one to one).
PACKAGED_LAYOUTS = {
    "efficientnet_pytorch": ("efficientnet_lite0", "efficientnet_lite0"),
    "flat_mobilenet_v2": ("mobilenet_v2", "mobilenet_v2"),
}
PACKAGED_KEYS = os.path.join(FIXTURES, "packaged_keys.json")


def record_packaged_keys() -> None:
    """Writes the key order of each packaged file (read by segjax, no torch; the packages must be
    installed)."""
    from segjax.models.weights import read_state_dict
    from segjax.models.weights.packaged import PACKAGED, installed_path

    keys = {
        layout: list(read_state_dict(installed_path(PACKAGED[name]))[0])
        for layout, (name, _) in PACKAGED_LAYOUTS.items()
    }
    with open(PACKAGED_KEYS, "w") as file:
        json.dump(keys, file, indent=0)
        file.write("\n")


def renamed_by_position(tensors: dict, file_keys: list[str]) -> dict:
    """``tensors`` under the packaged file's names, matched by position; keys past the file's
    (a classifier the file lacks) keep their names."""
    names = list(file_keys) + list(tensors)[len(file_keys) :]
    return dict(zip(names, tensors.values(), strict=True))


def seeded_state_dict(keys: list[tuple[str, list[int], str]], seed: int = SEED) -> dict:
    """Tensors for (key, shape, dtype) triples, each from a generator seeded by (seed, key)."""
    modules_with_stats = {k.rsplit(".", 1)[0] for k, _, _ in keys if k.endswith("running_mean")}
    tensors = {}
    for key, shape, dtype in keys:
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        module, name = key.rsplit(".", 1)
        if name == "num_batches_tracked":
            value = np.array(int(rng.integers(1, 1000)), np.int64)
        elif name == "running_mean":
            value = rng.normal(0.0, 0.2, shape)
        elif name == "running_var":
            value = rng.uniform(0.5, 2.0, shape)
        elif module in modules_with_stats:  # BatchNorm affine
            value = rng.uniform(0.6, 1.4, shape) if name == "weight" else rng.normal(0, 0.1, shape)
        elif name == "bias":
            value = rng.normal(0.0, 0.05, shape)
        else:  # conv or linear weight, variance-preserving
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        tensors[key] = np.asarray(value, np.int64 if dtype == "int64" else np.float32)
    return tensors


def seeded_input(shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    """An NCHW float32 input."""
    return np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)


def input_shape(name: str) -> tuple[int, ...]:
    return CLASSIFIER_INPUT if CASES[name][0] == "classifier" else SEGMENTATION_INPUT


def subsample(output: np.ndarray) -> np.ndarray:
    """NCHW logits at every SUBSAMPLE-th pixel; classifier logits unchanged."""
    return output if output.ndim == 2 else output[:, :, ::SUBSAMPLE, ::SUBSAMPLE]


# --- segjax side (no torch) ---


def segjax_model(name: str):
    from segjax.models import create_classifier, create_model

    arch, encoder, classes, attention = CASES[name]
    if arch == "classifier":
        return create_classifier(encoder, classes)
    return create_model(arch, encoder, num_classes=classes, attention=attention or None)


def segjax_output(name: str, variables: dict) -> np.ndarray:
    """The model's eval-mode output on the seeded input, NCHW like PyTorch's."""
    import jax

    model = segjax_model(name)
    x = seeded_input(input_shape(name)).transpose(0, 2, 3, 1)
    out = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    return out if out.ndim == 2 else out.transpose(0, 3, 1, 2)


def segjax_init(name: str) -> dict:
    """Zeros in the shape of the model's variables (a full import replaces every one; tracing
    ``init`` is cheap where compiling it is not: 30 s for a GhostNet)."""
    import jax

    from segjax.models.weights.transfer import abstract_variables

    abstract = abstract_variables(segjax_model(name), input_shape(name)[1])
    return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)


_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def never_run_parameters(name: str) -> int:
    """Parameters PyTorch's model has but never runs (smp's scSE before its last, skipless
    block; EfficientNet's conv_head and bn2), which segjax does not build: torch's count =
    segjax's + these."""
    from segjax.models.weights.smp import never_run
    from segjax.models.weights.transfer import abstract_variables

    if CASES[name][0] == "classifier":
        return 0
    model = segjax_model(name)
    tensors = never_run(model, abstract_variables(model, input_shape(name)[1]))
    return sum(v.size for k, v in tensors.items() if not k.endswith(_STATISTICS))


# --- PyTorch side (the bench extra) ---


def torch_model(name: str):
    import timm
    import torchvision

    arch, encoder, classes, attention = CASES[name]
    if arch == "classifier":
        if encoder.startswith(("resnet", "mobilenet")):
            return getattr(torchvision.models, encoder)(weights=None).eval()
        name = TORCH_CLASSIFIERS.get(encoder, encoder.removesuffix("_smp"))
        return timm.create_model(name, pretrained=False).eval()
    import segmentation_models_pytorch as smp

    model = getattr(smp, SMP_ARCHS[arch])(
        SMP_ENCODERS.get(encoder, encoder),
        encoder_weights=None,
        classes=classes,
        decoder_attention_type=attention or None,
    )
    return model.eval()


def torch_keys(model) -> list[tuple[str, list[int], str]]:
    return [
        (key, list(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in model.state_dict().items()
    ]


def torch_output(model, tensors: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    import torch

    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()})
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def torch_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def compare() -> None:
    """Prints max |segjax - torch| / max |torch| over the whole output of every case."""
    import tempfile

    from segjax.models.weights import load_weights, read_state_dict, write_safetensors

    print("| model | input | parameters (segjax = torch) | max abs diff / max abs torch |")
    print("|---|---|---:|---:|")
    for name in CASES:
        model = torch_model(name)
        tensors = seeded_state_dict(torch_keys(model))
        x = seeded_input(input_shape(name))
        expected = torch_output(model, tensors, x)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "weights.safetensors")
            write_safetensors(path, tensors, {})
            variables, report = load_weights(
                segjax_model(name), segjax_init(name), read_state_dict(path)[0], path
            )
        assert report.model_parameters + never_run_parameters(name) == torch_parameters(model)
        error = np.abs(segjax_output(name, variables) - expected).max() / np.abs(expected).max()
        shape = "x".join(map(str, input_shape(name)))
        print(f"| {name} | {shape} | {report.model_parameters:,} | {error:.1e} |", flush=True)
    compare_packaged_layouts()


def compare_packaged_layouts() -> None:
    """The rows of the packaged files' layouts: the seeded weights under the real file's key
    names (by position), saved as torch.save's legacy stream like the packaged files, read by
    segjax's torch-free reader."""
    import tempfile

    import torch

    from segjax.models.weights import load_weights, read_state_dict

    with open(PACKAGED_KEYS) as file:
        packaged_keys = json.load(file)
    for layout, (_, name) in PACKAGED_LAYOUTS.items():
        model = torch_model(name)
        tensors = seeded_state_dict(torch_keys(model))
        expected = torch_output(model, tensors, seeded_input(input_shape(name)))
        renamed = renamed_by_position(tensors, packaged_keys[layout])
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "weights.pth")
            torch.save(
                {k: torch.from_numpy(np.asarray(v)) for k, v in renamed.items()},
                path,
                _use_new_zipfile_serialization=False,
            )
            variables, report = load_weights(
                segjax_model(name), segjax_init(name), read_state_dict(path)[0], path
            )
        error = np.abs(segjax_output(name, variables) - expected).max() / np.abs(expected).max()
        shape = "x".join(map(str, input_shape(name)))
        row = f"{name} ({layout} keys, legacy .pth)"
        print(f"| {row} | {shape} | {report.model_parameters:,} | {error:.1e} |", flush=True)


def missing_torch(modules=("torch", "torchvision", "timm", "segmentation_models_pytorch")) -> bool:
    """True, after one ``error:`` line, where the bench extra these scripts run is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"error: {', '.join(missing)} not installed: this script runs PyTorch "
            "(pip install -e '.[bench]')",
            file=sys.stderr,
        )
    return bool(missing)


def main() -> int:
    if missing_torch():
        return 2
    if "--compare" in sys.argv[1:]:
        compare()
        return 0
    if "--packaged_keys" in sys.argv[1:]:
        record_packaged_keys()
        return 0
    import torch

    torch.manual_seed(0)
    os.makedirs(FIXTURES, exist_ok=True)
    index = {}
    for name in CASES:
        model = torch_model(name)
        keys = torch_keys(model)
        output = torch_output(model, seeded_state_dict(keys), seeded_input(input_shape(name)))
        np.save(os.path.join(FIXTURES, f"{name}.npy"), subsample(output))
        index[name] = {
            "keys": keys,
            "parameters": torch_parameters(model),
            "max_abs_output": float(np.abs(output).max()),
        }
        print(
            f"{name}: {len(keys)} tensors, {index[name]['parameters']:,} parameters, "
            f"max |output| {index[name]['max_abs_output']:.4g}",
            flush=True,
        )
    versions = {
        m.__name__: m.__version__
        for m in map(__import__, ("torch", "torchvision", "timm", "segmentation_models_pytorch"))
    }
    with open(os.path.join(FIXTURES, "cases.json"), "w") as file:
        json.dump({"seed": SEED, "versions": versions, "cases": index}, file, indent=0)
        file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
