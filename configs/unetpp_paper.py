"""The original U-Net++ (filters 32..512, dropout 0.5, no BN).

Variants after the colon: ``smoke``, ``small``, ``dsb2018`` (see segjax/defaults.py).
"""

from segjax.defaults import base_config


def get_config(arg: str | None = None):
    config = base_config(arg)
    config.model.arch = "unetpp_paper"
    config.model.encoder = ""
    return config
