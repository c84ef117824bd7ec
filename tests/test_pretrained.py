"""Weights in and out: parity with PyTorch through committed fixtures (no torch needed), strict
errors, encoder filling, input-channel adaptation and export round trips.

The fixtures (tests/fixtures/pretrained, made by ``python -m tests.pretrained_reference`` with the
bench extra) hold each PyTorch model's state-dict keys and its outputs for seeded weights; here
the same seeded weights go through a safetensors file into segjax. test_pretrained_live.py
compares with PyTorch directly when torch is installed.
"""

import json
import os
import pickle
import sys

import numpy as np
import pytest

from segjax.models import create_classifier, create_model
from segjax.models.weights import (
    WeightsFileError,
    adapt_input_kernel,
    export_state_dict,
    load_weights,
    read_state_dict,
    write_safetensors,
)
from segjax.models.weights.smp import never_run as never_run_tensors
from tests import pretrained_reference as ref
from tests.cli_utils import assert_one_error_line, run

with open(os.path.join(ref.FIXTURES, "cases.json")) as _file:
    FIXTURES = json.load(_file)["cases"]
# Run by default: one of each kind; the rest with -m parity (CI runs both).
DEFAULT_CASES = ("resnet18", "ghostnet_050", "smp_unet_resnet18_c1", "smp_unetpp_resnet18_c3")
TOLERANCE = 1e-4  # of max |torch output|


def seeded_file(tmp_path, name: str) -> str:
    path = str(tmp_path / f"{name}.safetensors")
    write_safetensors(path, ref.seeded_state_dict(FIXTURES[name]["keys"]), {})
    return path


def import_case(tmp_path, name: str):
    tensors, _ = read_state_dict(seeded_file(tmp_path, name))
    return load_weights(ref.segjax_model(name), ref.segjax_init(name), tensors, name)


def check_parity(tmp_path, name: str) -> None:
    variables, report = import_case(tmp_path, name)
    torch_count = FIXTURES[name]["parameters"]
    assert report.model_parameters + ref.never_run_parameters(name) == torch_count
    assert report.parameters == report.model_parameters  # every parameter came from the file
    expected = np.load(os.path.join(ref.FIXTURES, f"{name}.npy"))
    got = ref.subsample(ref.segjax_output(name, variables))
    assert got.shape == expected.shape
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error <= TOLERANCE, f"{name}: max |segjax - torch| = {error:.2e} x max |torch|"


@pytest.mark.parametrize("name", DEFAULT_CASES)
def test_output_parity_with_pytorch_fixture(tmp_path, name):
    check_parity(tmp_path, name)


@pytest.mark.parity
@pytest.mark.parametrize("name", [n for n in ref.CASES if n not in DEFAULT_CASES])
def test_output_parity_with_pytorch_fixture_full_matrix(tmp_path, name):
    check_parity(tmp_path, name)


@pytest.mark.parametrize("layout", list(ref.PACKAGED_LAYOUTS))
def test_packaged_file_layouts_match_pytorch(tmp_path, layout):
    """The layouts of the packaged ImageNet files (EfficientNet-PyTorch's keys, the flat
    MobileNetV2 keys): seeded weights under the real files' key names, matched by position with
    the PyTorch model's keys, give that model's outputs."""
    _, name = ref.PACKAGED_LAYOUTS[layout]
    with open(ref.PACKAGED_KEYS) as file:
        file_keys = json.load(file)[layout]
    tensors = ref.renamed_by_position(ref.seeded_state_dict(FIXTURES[name]["keys"]), file_keys)
    assert [k for k in tensors if k in file_keys] == file_keys  # every key of the real file
    variables, report = load_weights(ref.segjax_model(name), ref.segjax_init(name), tensors, layout)
    assert report.parameters == FIXTURES[name]["parameters"]
    expected = np.load(os.path.join(ref.FIXTURES, f"{name}.npy"))
    got = ref.segjax_output(name, variables)
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()


def test_smp_efficientnet_needs_the_smp_padding(tmp_path):
    """smp computes its EfficientNet-Lite0 with PyTorch's padding: its whole models fill
    efficientnet_lite0_smp, and the TensorFlow-padded efficientnet_lite0 refuses them, naming it
    (the encoder alone still loads, as the weights are the same)."""
    tensors, _ = read_state_dict(seeded_file(tmp_path, "smp_unet_efficientnet_lite0_smp_c1"))
    model = create_model("unet", "efficientnet_lite0")
    from segjax.models.weights.transfer import abstract_variables

    zeros = __import__("jax").tree.map(
        lambda x: np.zeros(x.shape, x.dtype), abstract_variables(model, 3)
    )
    with pytest.raises(WeightsFileError, match="which is encoder efficientnet_lite0_smp"):
        load_weights(model, zeros, tensors, "x")
    _, report = load_weights(model, zeros, tensors, "x", scope="encoder")
    assert report.target == "the encoder" and report.parameters == 2_958_848


def test_fixtures_cover_every_case():
    assert set(FIXTURES) == set(ref.CASES)
    for name in ref.CASES:
        assert os.path.exists(os.path.join(ref.FIXTURES, f"{name}.npy")), name


def test_a_wrong_weight_changes_the_output(tmp_path):
    """The parity check can fail: one BatchNorm statistic off and the outputs differ."""
    tensors, _ = read_state_dict(seeded_file(tmp_path, "resnet18"))
    tensors["layer3.1.bn2.running_var"] = tensors["layer3.1.bn2.running_var"] * 2
    variables, _ = load_weights(
        ref.segjax_model("resnet18"), ref.segjax_init("resnet18"), tensors, "x"
    )
    expected = np.load(os.path.join(ref.FIXTURES, "resnet18.npy"))
    got = ref.segjax_output("resnet18", variables)
    assert np.abs(got - expected).max() / np.abs(expected).max() > 1e-2


def test_wrong_architecture_lists_every_mismatch(tmp_path):
    tensors, _ = read_state_dict(seeded_file(tmp_path, "resnet50"))
    model = create_classifier("resnet34")
    with pytest.raises(WeightsFileError) as raised:
        load_weights(model, ref.segjax_init("resnet34"), tensors, "r50.safetensors")
    message = str(raised.value)
    assert "\n" not in message
    assert "holds torchvision resnet50, which does not fit a resnet34 classifier" in message
    unexpected = {k for k, _, _ in FIXTURES["resnet50"]["keys"]} - {
        k for k, _, _ in FIXTURES["resnet34"]["keys"]
    }
    for key in unexpected - {k for k in unexpected if k.endswith("num_batches_tracked")}:
        assert key in message  # all of them, not the first
    assert (
        "mis-shaped" in message
        and "layer1.0.conv1.weight (file 64x64x1x1, model 64x64x3x3)" in message
    )


def test_misshaped_tensor_is_named(tmp_path):
    tensors, _ = read_state_dict(seeded_file(tmp_path, "resnet18"))
    tensors["fc.weight"] = np.zeros((10, 512), np.float32)
    with pytest.raises(
        WeightsFileError, match=r"1 mis-shaped: fc.weight \(file 10x512, model 1000x512\)"
    ):
        load_weights(create_classifier("resnet18"), ref.segjax_init("resnet18"), tensors, "x")
    # Leaving out the head is explicit: then the file's head is ignored, the model's kept.
    init = ref.segjax_init("resnet18")
    init["params"]["fc"]["kernel"] = np.full_like(init["params"]["fc"]["kernel"], 7.0)
    variables, report = load_weights(create_classifier("resnet18"), init, tensors, "x", head=False)
    assert (variables["params"]["fc"]["kernel"] == 7.0).all()
    assert report.ignored == ["fc.bias", "fc.weight"]


def test_missing_tensor_is_named(tmp_path):
    tensors, _ = read_state_dict(seeded_file(tmp_path, "ghostnet_050"))
    del tensors["blocks.3.0.se.conv_reduce.bias"]
    with pytest.raises(WeightsFileError, match=r"1 missing: blocks.3.0.se.conv_reduce.bias$"):
        load_weights(
            create_classifier("ghostnet_050"), ref.segjax_init("ghostnet_050"), tensors, "x"
        )


def test_a_renamed_marking_key_names_the_nearest_layout(tmp_path):
    """Issue 25: a file that matches no layout because one of its marking keys was renamed
    says which layout it nearly is and which key it lacks."""
    tensors, _ = read_state_dict(seeded_file(tmp_path, "resnet18"))
    tensors["layer1.0.convX.weight"] = tensors.pop("layer1.0.conv1.weight")
    with pytest.raises(
        WeightsFileError,
        match=r"no known layout .*; nearest: torchvision resnet, which has "
        r"layer1.0.conv1.weight \(missing here\)",
    ):
        load_weights(create_classifier("resnet18"), ref.segjax_init("resnet18"), tensors, "x")


def test_truncated_safetensors_is_refused(tmp_path):
    path = seeded_file(tmp_path, "resnet18")
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)
    with pytest.raises(WeightsFileError, match="not a readable safetensors file") as raised:
        read_state_dict(path)
    assert path in str(raised.value) and "\n" not in str(raised.value)


class WritesAFile:
    """Unpickling it creates the file ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    """A .pth whose unpickling would create a file: refused (by torch.load(weights_only=True)
    where torch is installed, else because segjax reads pickles only through it)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    with open(path, "wb") as file:
        pickle.dump({"conv1.weight": WritesAFile(str(marker))}, file)
    with pytest.raises(WeightsFileError) as raised:
        read_state_dict(str(path))
    assert not marker.exists()
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_encoder_file_fills_only_the_encoder(tmp_path):
    tensors, _ = read_state_dict(seeded_file(tmp_path, "resnet34"))
    model = create_model("unet", "resnet34", num_classes=2, encoder_depth=4)
    from segjax.models.weights.transfer import abstract_variables

    abstract = abstract_variables(model, 3)
    init = __import__("jax").tree.map(lambda x: np.full(x.shape, 0.5, x.dtype), abstract)
    variables, report = load_weights(model, init, tensors, "r34")
    assert report.target == "the encoder"
    assert {k.split(".")[0] for k in report.ignored} == {"fc", "layer4"}  # head, deeper stage
    assert np.array_equal(
        variables["params"]["encoder"]["conv1"]["kernel"],
        tensors["conv1.weight"].transpose(2, 3, 1, 0),
    )
    assert np.array_equal(
        variables["batch_stats"]["encoder"]["layer3_5"]["bn2"]["var"],
        tensors["layer3.5.bn2.running_var"],
    )
    decoder = __import__("jax").tree.leaves(variables["params"]["decoder"])
    assert all((leaf == 0.5).all() for leaf in decoder)


def test_ghostnet_file_into_a_resnet_model_is_refused(tmp_path):
    tensors, _ = read_state_dict(seeded_file(tmp_path, "ghostnet_100"))
    model = create_model("unet", "resnet18")
    with pytest.raises(
        WeightsFileError, match="holds timm ghostnet_100, which does not fit a U-Net on resnet18"
    ):
        load_weights(model, ref.segjax_init("resnet18"), tensors, "x")


@pytest.mark.parametrize("channels", [1, 2, 4, 6])
def test_input_kernel_adaptation_follows_smp_and_timm(channels):
    """1 channel sums the RGB kernel; N channels repeat R, G, B, R, ... scaled by 3/N, so a grey
    image in 1 or 3k channels gets the RGB kernel's response to (g, g, g)."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    adapted = adapt_input_kernel(kernel, channels)
    assert adapted.shape == (8, channels, 3, 3)
    if channels == 1:
        assert np.allclose(adapted[:, 0], kernel.sum(axis=1))
    else:
        for index in range(channels):
            assert np.allclose(adapted[:, index], kernel[:, index % 3] * 3 / channels)
    if channels % 3 == 0 or channels == 1:
        patch = rng.normal(size=(3, 3)).astype(np.float32)  # one grey value per pixel
        response = np.einsum("oihw,hw->o", adapted, patch)
        assert np.allclose(response, np.einsum("oihw,hw->o", kernel, patch), atol=1e-5)


def test_one_channel_model_from_an_rgb_file(tmp_path):
    tensors, _ = read_state_dict(seeded_file(tmp_path, "resnet18"))
    model = create_model("unet", "resnet18", in_channels=1)
    from segjax.models.weights.transfer import abstract_variables

    abstract = abstract_variables(model, 1)
    init = __import__("jax").tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
    variables, report = load_weights(model, init, tensors, "x")
    assert "first conv adapted from 3 to 1 input channels (summed)" in report.summary()
    kernel = variables["params"]["encoder"]["conv1"]["kernel"]
    assert np.allclose(kernel[:, :, 0], tensors["conv1.weight"].sum(axis=1).transpose(1, 2, 0))


@pytest.mark.parametrize(
    "name",
    [
        "smp_unetpp_resnet18_c3",
        "smp_unetpp_resnet18_scse_c2",
        "ghostnet_050",
        "smp_unet_resnet34_c1",
        "mobilenet_v2",
        "efficientnet_lite0",
        "smp_unetpp_mobilenet_v2_c3",
        "smp_unet_efficientnet_lite0_smp_c1",
    ],
)
def test_export_gives_pytorchs_keys_and_round_trips(tmp_path, name):
    variables, _ = import_case(tmp_path, name)
    tensors, layout = export_state_dict(ref.segjax_model(name), variables)
    expected_layout = {"ghostnet_050": "timm", "mobilenet_v2": "torchvision"}
    assert layout == ("smp" if name.startswith("smp") else expected_layout.get(name, "timm"))
    # Exactly the keys, shapes and dtypes of PyTorch's state dict: load_state_dict(strict=True).
    assert [(k, list(v.shape), str(v.dtype)) for k, v in tensors.items()] == [
        (k, s, d)
        for k, s, d in sorted(FIXTURES[name]["keys"], key=lambda e: list(tensors).index(e[0]))
    ]
    original = ref.seeded_state_dict(FIXTURES[name]["keys"])
    model = ref.segjax_model(name)
    never_run = never_run_tensors(model, variables) if layout == "smp" else {}
    for key, value in tensors.items():
        if key in never_run:  # smp builds them and never runs them; zeros, identity BatchNorm
            assert np.array_equal(value, never_run[key]), key
        elif not key.endswith("num_batches_tracked"):
            assert np.array_equal(value, original[key]), key
    path = str(tmp_path / "out.safetensors")
    write_safetensors(path, tensors, {})
    back, _ = load_weights(
        ref.segjax_model(name), ref.segjax_init(name), read_state_dict(path)[0], path
    )
    flat = __import__("flax").traverse_util.flatten_dict
    assert all(np.array_equal(a, flat(back)[k]) for k, a in flat(variables).items())


def test_ghost_decoder_has_no_smp_equivalent():
    model = create_model("unet", "resnet18", decoder_block="ghost")
    from segjax.models.weights.transfer import abstract_variables

    with pytest.raises(WeightsFileError, match="no PyTorch equivalent: decoder/block0/unit/ghost1"):
        export_state_dict(model, abstract_variables(model, 3))


def convert(*arguments):
    return run([sys.executable, "-m", "segjax.convert", *map(str, arguments)])


@pytest.mark.slow
def test_convert_command_reports_and_writes_segjax_weights(tmp_path):
    source = seeded_file(tmp_path, "resnet18")
    out = tmp_path / "r18_segjax.safetensors"
    result = convert("--from", source, "--arch", "unet", "--encoder", "resnet18", "--to", out)
    assert result.returncode == 0, result.stderr
    assert (
        "loaded 100 tensors (11,176,512 of the model's 14,328,209 parameters) into the encoder"
        in result.stdout
    )
    assert "left out 2 not in this model (fc.*)" in result.stdout
    back = tmp_path / "back.safetensors"
    result = convert("--from", out, "--scope", "encoder", "--to", back)
    assert result.returncode == 0, result.stderr
    original, exported = read_state_dict(source)[0], read_state_dict(str(back))[0]
    assert set(exported) == set(original) - {"fc.weight", "fc.bias"}
    assert all(np.array_equal(exported[k], original[k]) for k in exported if "num_batches" not in k)
    wrong = convert("--from", source, "--arch", "unet", "--encoder", "resnet50")
    assert_one_error_line(
        wrong, 2, "holds torchvision resnet18, which does not fit a U-Net on resnet50"
    )
