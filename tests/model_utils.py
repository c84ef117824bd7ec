"""Helpers for model tests: shapes without compiling, variables without compiling an init."""

import math

import jax
import jax.numpy as jnp
import numpy as np


def variable_shapes(model, input_shape, **kwargs):
    """The variables ``model.init`` would create, as ShapeDtypeStructs (traced, not compiled)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), **kwargs))


def output_shapes(model, input_shape, **kwargs):
    """The outputs ``model.apply`` would give, as ShapeDtypeStructs: ``init_with_output`` traces
    the model once where ``init`` then ``apply`` would trace it twice."""
    key, x = jax.random.key(0), jnp.zeros(input_shape)
    return jax.eval_shape(lambda: model.init_with_output(key, x, **kwargs))[0]


def num_params(variables) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def random_variables(model, input_shape, seed=0, gain=2.0, bias_std=0.0, **kwargs):
    """Random kernels of variance ``gain / fan_in`` (2: He, for ReLU networks; 1: flax's own
    LeCun default), unit BN scales and variances, zero means, biases drawn from N(0, bias_std)
    (zero by default). ``kwargs`` go to ``model.init`` (e.g. ``train=False``).

    Compiling ``model.init`` of a deep model takes 5-30 s on two cores; filling the traced shapes
    with NumPy takes milliseconds, so forward-pass tests use this instead.
    """
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
