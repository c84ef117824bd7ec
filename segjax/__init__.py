"""segjax: image segmentation in JAX/Flax."""

from segjax import xla_flags

xla_flags.apply_defaults()
