"""Variables without compiling ``model.init``: their shapes traced, their values drawn by NumPy.

Compiling ``model.init`` of a deep model takes 5-90 s on two cores (a GhostNet U-Net's many
small layers are the slowest); tracing its shapes and filling them takes well under a second.
What needs weights but not trained ones (latency, file sizes, forward-pass tests) uses this.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def variable_shapes(model, input_shape, **kwargs):
    """The variables ``model.init`` would create, as ShapeDtypeStructs (traced, not compiled)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), **kwargs))


def random_variables(model, input_shape, seed=0, gain=2.0, bias_std=0.0, **kwargs):
    """Random kernels of variance ``gain / fan_in`` (2: He, for ReLU networks; 1: flax's own
    LeCun default), unit BN scales and variances, zero means, biases drawn from N(0, bias_std)
    (zero by default). ``kwargs`` go to ``model.init`` (e.g. ``train=False``)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            return jnp.asarray(rng.normal(0, math.sqrt(gain / fan_in), leaf.shape), leaf.dtype)
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name == "bias" and bias_std:
            return jnp.asarray(rng.normal(0, bias_std, leaf.shape), leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, variable_shapes(model, input_shape, **kwargs))
