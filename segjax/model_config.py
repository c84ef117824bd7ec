"""How ``config.model`` spells ``create_model``'s options, in one place.

A config cannot hold None, so an option whose factory default is None is spelt ``''``, ``()`` or
``0`` there (``NONE_AS``). Every option of every arch has a key in ``config.model`` (defaults from
``segjax.models.ARCHS``, stored nowhere else); an option of another arch than ``model.arch`` must
keep its default, or ``model_from_config`` passes it on for the factory to reject by name.
"""

from typing import Any

from segjax.models import ARCHS, create_model

# config.model keys that are not create_model options: the weights a run starts from
# (segjax.pretrained).
PRETRAINED_KEYS = ("pretrained", "pretrained_kind", "pretrained_sha256")
PRETRAINED_KINDS = ("", "encoder", "model")

# Options whose factory default is None, and how a config spells that None.
NONE_AS = {"decoder_channels": (), "attention": "", "norm": "", "prune_level": 0}


def model_defaults() -> dict[str, Any]:
    """Every arch's options as ``config.model`` spells their defaults."""
    defaults: dict[str, Any] = {}
    for options in ARCHS.values():
        for key, value in options.items():
            defaults[key] = NONE_AS[key] if value is None else value
    return defaults


def model_from_config(model_config: Any, num_classes: int, in_channels: int):
    """``create_model`` from ``config.model``. Options of ``model.arch`` are passed unless they
    hold the default; so are options of other archs that were changed, which the factory then
    rejects with its own error naming them."""
    defaults = model_defaults()
    options = {}
    for key, default in defaults.items():
        value = model_config.get(key, default)
        value = tuple(value) if isinstance(value, list | tuple) else value
        if value != default:  # else: left to the factory's default
            options[key] = value
    return create_model(
        model_config.arch,
        model_config.encoder or None,
        num_classes=num_classes,
        in_channels=in_channels,
        **options,
    )
