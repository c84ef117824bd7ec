"""Model registry: ``create_model`` for segmentation, ``create_classifier`` for ImageNet models.

>>> model = create_model("unetpp", "ghostnet_100", num_classes=3, deep_supervision=True)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
>>> logits = model.apply(variables, images, train=False)  # list of 4 x (B, H, W, 3)
"""

from segjax.models.factory import (
    ARCHS,
    ENCODERS,
    INSTANCE_ARCHS,
    create_classifier,
    create_model,
    is_instance_model,
)

__all__ = [
    "ARCHS",
    "ENCODERS",
    "INSTANCE_ARCHS",
    "create_classifier",
    "create_model",
    "is_instance_model",
]
