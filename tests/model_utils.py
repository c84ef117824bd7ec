"""Helpers for model tests: shapes without compiling, variables without compiling an init."""

import jax
import jax.numpy as jnp

from segjax.models.random_init import random_variables, variable_shapes

__all__ = ["num_params", "output_shapes", "random_variables", "variable_shapes"]


def output_shapes(model, input_shape, **kwargs):
    """The outputs ``model.apply`` would give, as ShapeDtypeStructs: ``init_with_output`` traces
    the model once where ``init`` then ``apply`` would trace it twice."""
    key, x = jax.random.key(0), jnp.zeros(input_shape)
    return jax.eval_shape(lambda: model.init_with_output(key, x, **kwargs))[0]


def num_params(variables) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
