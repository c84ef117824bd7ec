"""Mask R-CNN with a U-Net++ nested pyramid (Mask R-CNN++) on ResNet-18, for instance segmentation.

Variants after the colon: ``smoke`` (tests), ``small`` (synthetic shapes, 3 classes), ``dsb2018``
(the DSB 2018 nuclei with their instance maps). See segjax/defaults.py (``instance_config``).
"""

from segjax.defaults import instance_config


def get_config(arg: str | None = None):
    return instance_config(arg, "unetpp")
