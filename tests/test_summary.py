"""The summary: per-layer rows add up to the totals, and the command-line tool prints them."""

import subprocess
import sys

import pytest

from segjax.cli import parse_option, parse_size
from segjax.errors import UserError
from segjax.models import create_classifier, create_model
from segjax.models.counting import summarize
from segjax.models.factory import ENCODERS
from segjax.models.summary import describe
from tests.model_utils import num_params, variable_shapes


@pytest.mark.parametrize(
    "model",
    [
        create_model("unetpp", "ghostnet_050", attention="scse", deep_supervision=True),
        create_model("unet", "resnet50", decoder_block="ghost"),
        create_model("unetpp_paper", in_channels=3, norm="batch"),
        create_classifier("ghostnet_100"),
    ],
    ids=["unetpp-ghost-scse", "unet-r50-ghostdec", "paper-bn", "ghost-classifier"],
)
def test_every_parameter_belongs_to_a_counted_layer(model):
    summary = summarize(model, (1, 64, 64, 3))
    assert summary.params == num_params(variable_shapes(model, (1, 64, 64, 3)))
    assert summary.params == sum(layer.params for layer in summary.layers)
    assert summary.macs == sum(layer.macs for layer in summary.layers) > 0


def test_macs_of_a_single_conv_by_hand():
    """ResNet-18's stem at 224x224: 112*112 outputs x 7*7*3*64 MACs each."""
    summary = summarize(create_classifier("resnet18"), (1, 224, 224, 3))
    stem = next(layer for layer in summary.layers if layer.path == "encoder/conv1")
    assert stem.macs == 112 * 112 * 7 * 7 * 3 * 64
    assert stem.params == 7 * 7 * 3 * 64 and stem.output_shape == (1, 112, 112, 64)


def test_macs_scale_with_input_area():
    small = summarize(create_model("unet", "resnet18"), (1, 128, 128, 3)).macs
    large = summarize(create_model("unet", "resnet18"), (1, 256, 256, 3)).macs
    assert large == 4 * small


def test_grouped_table_shows_module_outputs():
    out = describe("unetpp", "ghostnet_100", parse_size("256"), depth=2)
    assert "params: 4,618,101 (trainable)" in out
    assert "MACs:   3.63 G" in out
    row = next(line for line in out.splitlines() if line.startswith("encoder/blocks_2_0 "))
    assert "64x64x24" in row  # the block's output, not its last layer's


def test_options_and_classifier():
    options = dict(map(parse_option, ["prune_level=2", "deep_supervision=True"]))
    assert options == {"prune_level": 2, "deep_supervision": True}
    out = describe("unetpp", "resnet34", parse_size("64x96"), options=options)
    assert "at 64x96x3" in out
    assert "head_1" in out and "head_2" in out and "head_3" not in out
    assert "params: 25,557,032" in describe("classifier", "resnet50", (224, 224))
    with pytest.raises(UserError, match="--size='64y'"):
        parse_size("64y")
    with pytest.raises(UserError, match="--size='0': height and width must be positive"):
        parse_size("0", multiple=32)
    with pytest.raises(UserError, match="must be multiples of 32"):
        parse_size("48x64", multiple=32)
    with pytest.raises(UserError, match="expected key=value"):
        parse_option("prune_level")


def test_cli_options_use_underscores():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "segjax.models.summary",
            "--arch=classifier",
            "--encoder=resnet18",
            "--size=64",
            "--num_classes=10",
            "--depth=1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "classifier / resnet18 at 64x64x3" in result.stdout
    assert "params: 11,181,642 (trainable)" in result.stdout  # 11,689,512 - 990 * 513


def test_cli_bad_name_is_a_one_line_error():
    result = subprocess.run(
        [sys.executable, "-m", "segjax.models.summary", "--arch", "unet", "--encoder", "vgg16"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: encoder='vgg16' is not valid")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_model_table_lists_every_model():
    result = subprocess.run(
        [sys.executable, "-m", "segjax.models.summary", "--all", "--size", "64"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| unet")]
    # unet and unetpp on every encoder, plus the two paper models
    assert len(rows) == 2 * len(ENCODERS) + 2
    assert "| unet | mobilenet_v2 | 6,628,945 |" in result.stdout
    assert "| unet | resnet34 | 24,436,369 |" in result.stdout
