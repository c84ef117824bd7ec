"""Mask R-CNN on segjax encoders, with a plain FPN or a U-Net++ nested pyramid."""

from segjax.models.detection.maskrcnn import DetectionSettings, MaskRCNN
from segjax.models.detection.pyramid import PYRAMIDS, FeaturePyramid, NestedPyramid, RepeatedPyramid

__all__ = [
    "PYRAMIDS",
    "DetectionSettings",
    "FeaturePyramid",
    "MaskRCNN",
    "NestedPyramid",
    "RepeatedPyramid",
]
