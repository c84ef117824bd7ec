"""Segmentation losses: pure functions of (logits, labels, valid) -> scalar.

``logits`` (B, H, W, C) float, ``labels`` (B, H, W) int class ids, ``valid`` (B, H, W) bool: pixels
that are padding or carry the ignore label have ``valid == False`` and count in no loss (the input
pipeline folds the ignore label into ``valid``; ``ignore_mask`` does it for raw labels).

A model with one output channel (C = 1) is binary: its logit is the foreground's, and the region
losses (Dice, Jaccard, Tversky, Lovasz) see it as two classes, background and foreground.
Region losses are computed over the whole batch, per class, and averaged over classes.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

Loss = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def ignore_mask(labels: jax.Array, valid: jax.Array, ignore_label: int | None) -> jax.Array:
    """``valid`` without the pixels whose label is ``ignore_label``."""
    return valid if ignore_label is None else valid & (labels != ignore_label)


def _masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    weights = valid.astype(jnp.float32)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def probabilities(logits: jax.Array) -> jax.Array:
    """Class probabilities (B, H, W, max(C, 2)); one logit means [background, foreground]."""
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] == 1:
        foreground = jax.nn.sigmoid(logits)
        return jnp.concatenate([1.0 - foreground, foreground], axis=-1)
    return jax.nn.softmax(logits, axis=-1)


DEEP_SUPERVISION_MODES = ("accurate", "fast")


def head_probabilities(outputs, mode: str = "accurate", head: int = -1) -> jax.Array:
    """Class probabilities of a model's output. A deep-supervision list of heads is combined
    by ``mode``: 'accurate' averages the heads' probabilities, 'fast' takes one head (``head``,
    the last and deepest by default). The one place heads are combined, for metrics, inference,
    instance splitting and export alike."""
    if not isinstance(outputs, list | tuple):
        return probabilities(outputs)
    if mode == "fast":
        return probabilities(outputs[head])
    if mode != "accurate":
        raise ValueError(f"deep supervision mode={mode!r}; choose 'accurate' or 'fast'")
    return sum(probabilities(h) for h in outputs) / len(outputs)


def _one_hot(labels: jax.Array, num_classes: int, valid: jax.Array) -> jax.Array:
    return jax.nn.one_hot(labels, num_classes) * valid[..., None]


def cross_entropy(
    logits,
    labels,
    valid,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
) -> jax.Array:
    """Softmax cross-entropy averaged over valid pixels (weighted by their class's weight)."""
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    if num_classes == 1:
        return binary_cross_entropy(logits, labels, valid, label_smoothing=label_smoothing)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    if class_weights is not None and len(class_weights):
        weights = jnp.asarray(class_weights, jnp.float32)[labels] * valid
        return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1e-8)
    return _masked_mean(losses, valid)


def binary_cross_entropy(logits, labels, valid, label_smoothing: float = 0.0) -> jax.Array:
    """Sigmoid cross-entropy of a one-channel model; labels are 0 (background) or 1."""
    if logits.shape[-1] != 1:
        raise ValueError(f"binary_cross_entropy needs one output channel, got {logits.shape[-1]}")
    targets = labels.astype(jnp.float32) * (1 - label_smoothing) + 0.5 * label_smoothing
    losses = optax.sigmoid_binary_cross_entropy(logits[..., 0].astype(jnp.float32), targets)
    return _masked_mean(losses, valid)


def focal(logits, labels, valid, gamma: float = 2.0) -> jax.Array:
    """Focal loss (Lin et al., 2017): cross-entropy scaled by (1 - p_true) ** gamma."""
    probs = probabilities(logits)
    p_true = jnp.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    losses = -((1 - p_true) ** gamma) * jnp.log(jnp.clip(p_true, 1e-7, 1.0))
    return _masked_mean(losses, valid)


def _region_counts(logits, labels, valid):
    probs = probabilities(logits) * valid[..., None]
    targets = _one_hot(labels, probs.shape[-1], valid)
    axes = tuple(range(probs.ndim - 1))
    intersection = jnp.sum(probs * targets, axis=axes)
    return intersection, jnp.sum(probs, axis=axes), jnp.sum(targets, axis=axes)


def tversky(
    logits, labels, valid, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0
) -> jax.Array:
    """1 - mean over classes of TP / (TP + alpha FP + beta FN), on soft counts.

    alpha = beta = 0.5 is the Dice loss; alpha = beta = 1 the Jaccard loss."""
    tp, predicted, actual = _region_counts(logits, labels, valid)
    fp, fn = predicted - tp, actual - tp
    return 1.0 - jnp.mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))


def dice(logits, labels, valid, smooth: float = 1.0) -> jax.Array:
    """Soft Dice loss: 1 - mean over classes of 2 |P n T| / (|P| + |T|)."""
    return tversky(logits, labels, valid, 0.5, 0.5, smooth)


def jaccard(logits, labels, valid, smooth: float = 1.0) -> jax.Array:
    """Soft Jaccard (IoU) loss: 1 - mean over classes of |P n T| / |P u T|."""
    return tversky(logits, labels, valid, 1.0, 1.0, smooth)


def _lovasz_gradient(sorted_foreground: jax.Array) -> jax.Array:
    """Gradient of the Lovasz extension of the Jaccard loss at sorted errors (Berman et al.)."""
    total = jnp.sum(sorted_foreground)
    intersection = total - jnp.cumsum(sorted_foreground)
    union = total + jnp.cumsum(1.0 - sorted_foreground)
    jaccard_curve = 1.0 - intersection / union
    return jnp.concatenate([jaccard_curve[:1], jaccard_curve[1:] - jaccard_curve[:-1]])


def lovasz_softmax(logits, labels, valid) -> jax.Array:
    """Lovasz-softmax (Berman et al., CVPR 2018) over all valid pixels of the batch, averaged over
    the classes present in the labels. Invalid pixels get zero error, so they sort last and add
    nothing."""
    probs = probabilities(logits).reshape(-1, max(logits.shape[-1], 2))
    flat_valid = valid.reshape(-1).astype(jnp.float32)
    foreground = jax.nn.one_hot(labels.reshape(-1), probs.shape[-1]) * flat_valid[:, None]

    def per_class(fg, p):
        errors = jnp.abs(fg - p) * flat_valid
        order = jnp.argsort(-errors)
        return jnp.dot(errors[order], jax.lax.stop_gradient(_lovasz_gradient(fg[order])))

    losses = jax.vmap(per_class, in_axes=(1, 1))(foreground, probs)
    present = (jnp.sum(foreground, axis=0) > 0).astype(jnp.float32)
    return jnp.sum(losses * present) / jnp.maximum(jnp.sum(present), 1.0)


LOSSES: dict[str, Loss] = {
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "dice": dice,
    "jaccard": jaccard,
    "focal": focal,
    "tversky": tversky,
    "lovasz_softmax": lovasz_softmax,
}


def loss_options() -> dict[str, dict[str, Any]]:
    """Every loss's keyword options and their defaults, read from the signatures above (the one
    place they are stored); an option that defaults to None (class weights) is spelt ``()``."""
    options = {}
    for name, loss in LOSSES.items():
        parameters = list(inspect.signature(loss).parameters.values())[3:]
        options[name] = {p.name: () if p.default is None else p.default for p in parameters}
    return options


def make_loss(weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None):
    """A weighted sum of named losses, averaged over deep-supervision heads.

    ``weights`` maps loss names (``LOSSES``) to weights; ``options`` maps a name to its keyword
    arguments, e.g. ``{"cross_entropy": {"label_smoothing": 0.1}}``. The returned function takes
    logits (an array, or a list of them from a deep-supervised model) and returns
    ``(total, {name: value})``.
    """
    options = dict(options or {})
    unknown = sorted(set(weights) - set(LOSSES)) + sorted(set(options) - set(LOSSES))
    if unknown:
        raise ValueError(f"unknown loss {unknown[0]!r}; choose from {sorted(LOSSES)}")
    terms = {name: w for name, w in weights.items() if w}
    if not terms:
        raise ValueError(f"loss weights {dict(weights)} select no loss; give one a weight")

    def loss_fn(logits, labels, valid):
        heads = logits if isinstance(logits, list | tuple) else [logits]
        values = {
            name: sum(LOSSES[name](head, labels, valid, **options.get(name, {})) for head in heads)
            / len(heads)
            for name in terms
        }
        return sum(terms[name] * value for name, value in values.items()), values

    return loss_fn
