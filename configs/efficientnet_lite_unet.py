"""U-Net on an EfficientNet-Lite0 encoder (timm's ``tf_efficientnet_lite0``: TensorFlow 'same'
padding, as its ImageNet weights were trained), inputs normalised to [-1, 1] (mean 0.5, std 0.5)
as those weights expect.

From ImageNet: ``python -m segjax.imagenet_weights --out weights`` once, then
``--config.model.pretrained=weights/efficientnet_lite0.safetensors`` (docs/weights.md).

Variants after the colon: ``smoke``, ``small``, ``dsb2018`` (see segjax/defaults.py).
"""

from segjax.defaults import base_config
from segjax.models.weights.packaged import PACKAGED


def get_config(arg: str | None = None):
    config = base_config(arg)
    config.model.arch = "unet"
    config.model.encoder = "efficientnet_lite0"
    weights = PACKAGED["efficientnet_lite0"]
    config.data.mean, config.data.std = weights.mean, weights.std
    return config
