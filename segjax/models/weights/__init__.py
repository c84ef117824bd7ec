"""Weights that travel between segjax and PyTorch (torchvision, timm, segmentation_models.pytorch).

>>> tensors, _ = read_state_dict("resnet34.safetensors")
>>> variables, report = load_weights(model, variables, tensors, "resnet34.safetensors")
>>> print(report.summary())
"""

from segjax.models.weights.files import (
    WeightsFileError,
    read_state_dict,
    sha256,
    write_safetensors,
)
from segjax.models.weights.transfer import (
    Report,
    adapt_input_kernel,
    export_state_dict,
    load_weights,
    plan,
)

__all__ = [
    "Report",
    "WeightsFileError",
    "adapt_input_kernel",
    "export_state_dict",
    "load_weights",
    "plan",
    "read_state_dict",
    "sha256",
    "write_safetensors",
]
