"""Parameter counts and MACs against the published models (../shared/DESIGN.md), no compile."""

import pytest

from segjax.models import create_classifier, create_model
from segjax.models.summary import summarize
from tests.model_utils import num_params, variable_shapes

SEGMENTATION = [
    ("unet", "resnet18", 14_328_209),
    ("unet", "resnet34", 24_436_369),
    ("unet", "resnet50", 32_521_105),
    ("unetpp", "resnet18", 15_970_449),
    ("unetpp", "resnet34", 26_078_609),
    ("unetpp", "resnet50", 48_985_745),
]
CLASSIFIERS = [
    ("resnet18", 11_689_512),
    ("resnet34", 21_797_672),
    ("resnet50", 25_557_032),
    ("resnet101", 44_549_160),
    ("ghostnet_050", 2_587_292),
    ("ghostnet_100", 5_182_508),
    ("ghostnet_130", 7_358_820),
]


@pytest.mark.parametrize("arch,encoder,expected", SEGMENTATION)
def test_smp_segmentation_param_counts(arch, encoder, expected):
    model = create_model(arch, encoder, num_classes=1, in_channels=3)
    assert num_params(variable_shapes(model, (1, 64, 64, 3))) == expected


@pytest.mark.parametrize("encoder,expected", CLASSIFIERS)
def test_classifier_param_counts(encoder, expected):
    model = create_classifier(encoder, num_classes=1000)
    assert num_params(variable_shapes(model, (1, 64, 64, 3))) == expected


@pytest.mark.parametrize(
    "arch,options,expected",
    [
        ("unet_paper", {}, 7_759_521),
        ("unetpp_paper", {}, 9_041_601),
        ("unetpp_paper", {"deep_supervision": True}, 9_041_700),
    ],
)
def test_paper_param_counts(arch, options, expected):
    model = create_model(arch, num_classes=1, in_channels=1, **options)
    assert num_params(variable_shapes(model, (1, 64, 64, 1))) == expected


@pytest.mark.parametrize(
    "encoder,low,high",
    [
        ("resnet50", 4.09e9 * 0.97, 4.09e9 * 1.03),
        ("resnet18", 1.81e9 * 0.97, 1.81e9 * 1.03),
        ("ghostnet_100", 0.14e9 * 0.97, 0.15e9 * 1.03),
        ("ghostnet_050", 42e6 * 0.97, 42e6 * 1.03),
        ("ghostnet_130", 226e6 * 0.97, 226e6 * 1.03),
    ],
)
def test_classifier_macs_match_published(encoder, low, high):
    summary = summarize(create_classifier(encoder), (1, 224, 224, 3))
    assert low <= summary.macs <= high
