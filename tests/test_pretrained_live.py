"""PyTorch itself, where it is installed (``pip install -e '.[bench]'``): the same seeded weights
through torchvision / timm / smp and through segjax give the same outputs, over the whole output;
a model trained in segjax loads into smp strictly and gives its outputs; segjax's torch-free reader
gives what ``torch.load`` gives for both of torch.save's formats and for the packaged ImageNet
files, and a malicious file runs nothing."""

import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
smp = pytest.importorskip("segmentation_models_pytorch")

from segjax.models import create_model  # noqa: E402
from segjax.models.weights import (  # noqa: E402
    WeightsFileError,
    export_state_dict,
    load_weights,
    read_state_dict,
    write_safetensors,
)
from tests import pretrained_reference as ref  # noqa: E402
from tests.test_pretrained import WritesAFile  # noqa: E402

TOLERANCE = 1e-4


def relative_error(name: str, tmp_path) -> float:
    model = ref.torch_model(name)
    tensors = ref.seeded_state_dict(ref.torch_keys(model))
    x = ref.seeded_input(ref.input_shape(name))
    expected = ref.torch_output(model, tensors, x)
    path = str(tmp_path / f"{name}.pth")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()}, path)
    loaded, _ = read_state_dict(path)  # torch's file, segjax's reader
    variables, report = load_weights(ref.segjax_model(name), ref.segjax_init(name), loaded, path)
    assert report.model_parameters + ref.never_run_parameters(name) == ref.torch_parameters(model)
    got = ref.segjax_output(name, variables)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("name", list(ref.CASES))
def test_whole_output_matches_pytorch(tmp_path, name):
    assert relative_error(name, tmp_path) <= TOLERANCE


SMP_ENCODERS = {"efficientnet_lite0_smp": "timm-tf_efficientnet_lite0"}


@pytest.mark.parametrize("encoder", ["resnet34", "mobilenet_v2", "efficientnet_lite0_smp"])
def test_segjax_unet_exported_to_smp_gives_the_same_outputs(tmp_path, encoder):
    model = create_model("unet", encoder, num_classes=3)
    variables = jax.jit(lambda r: model.init(r, np.zeros((1, 64, 64, 3)), train=False))(
        jax.random.key(1)
    )
    # Statistics as a trained model has them, not 0 and 1: means around 0 (means near 1 would
    # leave every ReLU of a MobileNet closed and both outputs zero), variances 0.5 to 2.
    rng = np.random.default_rng(0)
    variables = jax.tree.map(np.asarray, variables)
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda path, s: (
            rng.normal(0.0, 0.2, s.shape)
            if path[-1].key == "mean"
            else rng.uniform(0.5, 2, s.shape)
        ).astype(np.float32),
        variables["batch_stats"],
    )
    tensors, layout = export_state_dict(model, variables)
    path = str(tmp_path / f"unet_{encoder}.safetensors")
    write_safetensors(path, tensors, {"format": "pt"})
    net = smp.Unet(SMP_ENCODERS.get(encoder, encoder), encoder_weights=None, classes=3).eval()
    from safetensors.torch import load_file

    net.load_state_dict(load_file(path), strict=True)
    x = ref.seeded_input(ref.SEGMENTATION_INPUT)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = np.asarray(model.apply(variables, x.transpose(0, 2, 3, 1), train=False))
    got = got.transpose(0, 3, 1, 2)
    assert layout == "smp"
    assert np.abs(expected).max() > 0.1  # a real output, not a dead network's zeros
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()


def test_malicious_torch_save_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "weights.pth")
    torch.save({"conv1.weight": WritesAFile(str(marker))}, path)  # a real zip-format .pth
    with pytest.raises(WeightsFileError, match="names io.open, which is not part of a state"):
        read_state_dict(path)
    assert not marker.exists() and os.path.exists(path)


@pytest.mark.parametrize("zip_format", [True, False])
def test_reader_gives_what_torch_load_gives(tmp_path, zip_format):
    """torch.save's zip archive and its legacy stream (_use_new_zipfile_serialization=False),
    with every float dtype, an integer buffer, a transposed view and a slice of a shared
    storage."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "conv.weight": torch.randn(8, 3, 3, 3),
        "half": torch.randn(5).half(),
        "brain": torch.randn(6).bfloat16(),
        "double": torch.randn(2, 2).double(),
        "bn.num_batches_tracked": torch.tensor(7),
        "transposed": base.t(),
        "slice": base[2:],
    }
    path = str(tmp_path / "w.pth")
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=zip_format)
    expected = torch.load(path, weights_only=True)["state_dict"]
    got, _ = read_state_dict(path)
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        want = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert got[key].dtype == want.dtype and np.array_equal(got[key], want), key


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_reader_gives_what_torch_load_gives_for_the_packaged_files(name):
    from segjax.models.weights.packaged import PACKAGED, installed_path

    path = installed_path(PACKAGED[name])
    expected = torch.load(path, weights_only=True)
    got, _ = read_state_dict(path)
    assert list(got) == list(expected)
    assert all(np.array_equal(got[k], v.numpy()) for k, v in expected.items())
