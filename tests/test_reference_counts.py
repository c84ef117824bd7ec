"""Parameter counts and MACs against the published models (../shared/DESIGN.md), no compile."""

import pytest

from segjax.models import create_classifier, create_model
from segjax.models.counting import summarize
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
    ("mobilenet_v2", 3_504_872),  # torchvision mobilenet_v2
    ("efficientnet_lite0", 4_652_008),  # timm tf_efficientnet_lite0
    ("efficientnet_lite0_smp", 4_652_008),  # timm efficientnet_lite0
]
# smp 0.6 Unet / UnetPlusPlus on the lightweight encoders, 1 and 3 classes. smp keeps timm
# EfficientNet's conv_head (320 -> 1280) and bn2 after the last stage it taps and never runs
# them: 409,600 + 2,560 parameters that segjax does not build.
SMP_NEVER_RUN = {"mobilenet_v2": 0, "efficientnet_lite0": 412_160}
SMP_LIGHTWEIGHT = [
    ("unet", "mobilenet_v2", 1, 6_628_945),
    ("unet", "mobilenet_v2", 3, 6_629_235),
    ("unetpp", "mobilenet_v2", 1, 6_824_721),
    ("unetpp", "mobilenet_v2", 3, 6_825_011),
    ("unet", "efficientnet_lite0", 1, 5_614_929),  # smp's encoder timm-tf_efficientnet_lite0
    ("unet", "efficientnet_lite0", 3, 5_615_219),
    ("unetpp", "efficientnet_lite0", 1, 5_933_041),
    ("unetpp", "efficientnet_lite0", 3, 5_933_331),
]


@pytest.mark.parametrize("arch,encoder,expected", SEGMENTATION)
def test_smp_segmentation_param_counts(arch, encoder, expected):
    model = create_model(arch, encoder, num_classes=1, in_channels=3)
    assert num_params(variable_shapes(model, (1, 64, 64, 3))) == expected


@pytest.mark.parametrize("arch,encoder,classes,expected", SMP_LIGHTWEIGHT)
def test_smp_lightweight_param_counts(arch, encoder, classes, expected):
    for name in (encoder, f"{encoder}_smp") if encoder.startswith("efficientnet") else (encoder,):
        model = create_model(arch, name, num_classes=classes, in_channels=3)
        count = num_params(variable_shapes(model, (1, 64, 64, 3)))
        assert count + SMP_NEVER_RUN[encoder] == expected


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
        # Exactly the MACs of PyTorch's models, counted with forward hooks on every Conv2d and
        # Linear (MobileNetV2's paper: 300 M).
        ("mobilenet_v2", 300_774_272, 300_774_272),
        ("efficientnet_lite0", 385_187_552, 385_187_552),
    ],
)
def test_classifier_macs_match_published(encoder, low, high):
    summary = summarize(create_classifier(encoder), (1, 224, 224, 3))
    assert low <= summary.macs <= high
