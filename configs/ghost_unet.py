"""U-Net on a GhostNet-1.0 encoder.

Variants after the colon: ``smoke``, ``small``, ``dsb2018`` (see segjax/defaults.py).
"""

from segjax.defaults import base_config


def get_config(arg: str | None = None):
    config = base_config(arg)
    config.model.arch = "unet"
    config.model.encoder = "ghostnet_100"
    return config
