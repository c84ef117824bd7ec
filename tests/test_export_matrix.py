"""A few cells of the export parity matrix (``python -m tests.export_parity_matrix`` runs all):
the deep-supervised U-Net++ (its log-mean-probability output) and the paper U-Net (its max pool),
ONNX and StableHLO against JAX."""

import importlib.util
import sys

import pytest

from tests.cli_utils import run


def assert_cells_pass(cells: list[str], count: int) -> None:
    if importlib.util.find_spec("jax2onnx") is None:
        pytest.skip("the deploy extra is not installed: pip install -e '.[deploy]'")
    result = run([sys.executable, "-m", "tests.export_parity_matrix", *cells])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{count} of {count} models pass" in result.stdout


@pytest.mark.parity
def test_deep_supervision_and_paper_unet_export_like_jax():
    assert_cells_pass(
        ["--archs", "unetpp_ds,unet_paper", "--encoders", "ghostnet_050", "--sizes", "64x64"], 2
    )


@pytest.mark.parity
def test_lightweight_encoders_export_like_jax():
    """MobileNetV2 (ReLU6) and EfficientNet-Lite0 (TensorFlow's asymmetric 'same' padding) at a
    non-square size."""
    cells = ["--archs", "unet", "--encoders", "mobilenet_v2,efficientnet_lite0", "--sizes", "64x96"]
    assert_cells_pass(cells, 2)
