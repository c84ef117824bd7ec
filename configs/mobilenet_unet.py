"""U-Net on a MobileNetV2 encoder (torchvision's, width 1.0), inputs normalised with ImageNet's
mean and std as its ImageNet weights were trained.

From ImageNet: ``python -m segjax.imagenet_weights --out weights`` once, then
``--config.model.pretrained=weights/mobilenet_v2.safetensors`` (docs/weights.md).

Variants after the colon: ``smoke``, ``small``, ``dsb2018`` (see segjax/defaults.py).
"""

from segjax.defaults import base_config
from segjax.models.weights.packaged import PACKAGED


def get_config(arg: str | None = None):
    config = base_config(arg)
    config.model.arch = "unet"
    config.model.encoder = "mobilenet_v2"
    weights = PACKAGED["mobilenet_v2"]
    config.data.mean, config.data.std = weights.mean, weights.std
    return config
