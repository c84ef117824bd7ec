"""segjax: image segmentation in JAX/Flax.

Importing segjax changes nothing in the importing program: the command lines
(``segjax.cli.run``) set segjax's XLA flags (``segjax.xla_flags``) and quieter logs
(``segjax.logs``) for their own process.
"""
