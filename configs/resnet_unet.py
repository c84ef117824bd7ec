"""U-Net on a ResNet-18 encoder: the quick start (2000 steps at 96x96 on segjax_shapes).

ResNet-34/50/101 with ``--config.model.encoder=resnet34``.

Variants after the colon: ``smoke``, ``small``, ``dsb2018`` (see segjax/defaults.py).
"""

from segjax.defaults import base_config


def get_config(arg: str | None = None):
    config = base_config(arg)
    config.model.arch = "unet"
    config.model.encoder = "resnet18"
    return config
