"""BatchNorm whose batch statistics XLA:CPU computes fast: sums over the batch as matrix products.

On XLA:CPU a BatchNorm layer's reductions over (batch, height, width), in the forward pass (the
mean and the mean square) and the backward pass (the sums of the gradient and of the gradient
times the normalised input), run as XLA's tree-rewritten reductions (``reduce-window`` then
``reduce``), 2-4x slower than the same sums as a vector-matrix product: ``ones(M) @ x`` with x
seen as (M, C), which Eigen's GEMV computes at memory speed (``benchmarks/README.md``,
"BatchNorm statistics"). In a training step these reductions took 120-150 ms of a ResNet-34 or
GhostNet U-Net's step of 500-900 ms.

``FusedBatchNorm`` is ``flax.linen.BatchNorm`` (same variables, names, momentum, epsilon, float32
statistics, biased running variance, E[x^2] - E[x]^2 clipped at 0) with its training-mode
normalisation one ``jax.custom_vjp`` whose forward and backward take every per-channel sum as such
a product. ``layers.batch_norm`` builds it where convolutions take their fused path too
(``conv_ops``: on CPU unless ``conv_impl='lax'``); everywhere else, and in exports, layers use
Flax's own BatchNorm.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def _channel_sums(x: jax.Array) -> jax.Array:
    """The sum over the rows of an (M, C) array, as a vector-matrix product."""
    return jnp.ones((x.shape[0],), x.dtype) @ x


def _statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Flax's fast variance: the mean and E[x^2] - E[x]^2, clipped at 0."""
    count = x.shape[0]
    mean = _channel_sums(x) / count
    var = jnp.maximum(_channel_sums(x * x) / count - mean * mean, 0.0)
    return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_batch(x, scale, bias, epsilon: float):
    """(y, mean, var) of training-mode BatchNorm on (M, C) float32 rows. The gradient flows
    through ``y`` only: ``mean`` and ``var`` feed the running statistics, not the loss."""
    mean, var = _statistics(x)
    y = (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
    return y, mean, var


def _forward(x, scale, bias, epsilon):
    mean, var = _statistics(x)
    inverse = lax.rsqrt(var + epsilon)
    y = (x - mean) * (inverse * scale) + bias
    return (y, mean, var), (x, mean, inverse, scale)


def _backward(epsilon, residuals, cotangents):
    del epsilon
    x, mean, inverse, scale = residuals
    dy = cotangents[0]
    count = x.shape[0]
    normalized = (x - mean) * inverse
    sum_dy = _channel_sums(dy)
    sum_dy_normalized = _channel_sums(dy * normalized)
    dx = (scale * inverse) * (dy - sum_dy / count - normalized * (sum_dy_normalized / count))
    return dx, sum_dy_normalized, sum_dy


normalize_batch.defvjp(_forward, _backward)


class FusedBatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` over the last axis, its batch statistics and their gradients computed
    by ``normalize_batch``; running averages as Flax's."""

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        del mask
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, scale, bias)
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
            y = (x32 - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
            return y.astype(dtype)
        y, mean, var = normalize_batch(x32.reshape(-1, features), scale, bias, self.epsilon)
        if not self.is_initializing():
            mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.reshape(x.shape).astype(dtype)
