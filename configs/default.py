"""The base config (``segjax/defaults.py``): U-Net/ResNet-34 on the synthetic shapes.

Variants: ``:smoke``, ``:small``, ``:dsb2018``.
"""

from segjax.defaults import base_config


def get_config(arg: str | None = None):
    return base_config(arg)
