"""The train state and the pure step functions the loop jit-compiles: ``train_step`` (one
optimizer update on a global batch, with gradient accumulation), ``eval_step`` (confusion
matrices of a global batch) and ``detect_step`` (an instance model's detections).

What a training step minimises is an *objective*, ``objective(model, variables, batch, rng) ->
(loss, loss parts, updated batch_stats)``: ``semantic_objective(loss_fn)`` for segmentation
models, ``instance_objective`` for Mask R-CNN."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from segjax import metrics as metrics_lib
from segjax.detection.losses import maskrcnn_loss
from segjax.losses import head_probabilities


class TrainState(train_state.TrainState):
    batch_stats: Any
    dropout_rng: jax.Array  # raw uint32 key; folded with the step for each step's dropout

    @property
    def variables(self) -> dict[str, Any]:
        """What ``model.apply`` takes: params, and BatchNorm statistics if the model has any."""
        return variables_of(self.params, self.batch_stats)


def variables_of(params: Any, batch_stats: Any) -> dict[str, Any]:
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def create_train_state(rng: jax.Array, model, tx, input_shape) -> TrainState:
    init_rng, dropout_rng = jax.random.split(rng)
    # Compiled even when called outside jit (inside the trainer's jit it is inlined): run eagerly,
    # op by op, a model's initialisers take 10-30x longer than their compilation.
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(init_rng, jnp.zeros(input_shape, jnp.float32))
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        dropout_rng=dropout_rng,
    )


def semantic_objective(loss_fn):
    """A segmentation model's objective: ``loss_fn(logits, label, valid)`` of its outputs."""

    def objective(model, variables, batch, rng):
        outputs, updates = model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        loss, parts = loss_fn(outputs, batch["label"], batch["valid"])
        return loss, parts, updates.get("batch_stats", variables.get("batch_stats", {}))

    return objective


def instance_objective(model, variables, batch, rng):
    """Mask R-CNN's objective: its five losses on the batch's detection targets, the proposal
    sampling drawn from ``rng``."""
    outputs, updates = model.apply(
        variables,
        batch["image"],
        batch["boxes"],
        batch["classes"],
        batch["instances"],
        method="train_outputs",
        mutable=["batch_stats"],
        rngs={"sample": rng},
    )
    loss, parts = maskrcnn_loss(outputs)
    return loss, parts, updates.get("batch_stats", variables.get("batch_stats", {}))


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model,
    loss_fn=None,
    objective=None,
    accumulation_steps: int = 1,
) -> tuple[TrainState, dict]:
    """One optimizer update on a global batch, split into ``accumulation_steps`` micro-batches
    whose gradients are averaged. Minimises ``objective``, or ``semantic_objective(loss_fn)``.
    Returns the new state and scalar metrics."""
    step_rng = jax.random.fold_in(state.dropout_rng, state.step)
    if objective is None:
        objective = semantic_objective(loss_fn)

    def loss_and_stats(params, batch_stats, micro, rng):
        loss, parts, new_stats = objective(model, variables_of(params, batch_stats), micro, rng)
        return loss, (new_stats, parts)

    grad_fn = jax.value_and_grad(loss_and_stats, has_aux=True)
    if accumulation_steps == 1:
        (loss, (batch_stats, parts)), grads = grad_fn(
            state.params, state.batch_stats, batch, step_rng
        )
    else:
        k = accumulation_steps
        # Micro-batch j takes rows j, j + k, ...: each device keeps its own rows.
        micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(-1, k, *x.shape[1:]), 0, 1), batch)

        def accumulate(carry, inputs):
            grads_sum, batch_stats = carry
            micro_batch, index = inputs
            (loss, (batch_stats, parts)), grads = grad_fn(
                state.params, batch_stats, micro_batch, jax.random.fold_in(step_rng, index)
            )
            return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats), (loss, parts)

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grads, batch_stats), (losses, parts) = jax.lax.scan(
            accumulate, (zeros, state.batch_stats), (micro, jnp.arange(k))
        )
        grads = jax.tree.map(lambda g: g / k, grads)
        loss, parts = jnp.mean(losses), jax.tree.map(jnp.mean, parts)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    scalars = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    scalars.update({f"loss/{name}": value for name, value in parts.items()})
    return new_state, scalars


def predict_step(state: TrainState, images: jax.Array, *, model, mode: str) -> jax.Array:
    """(B, H, W) class ids of eval-mode predictions (deep supervision combined by ``mode``)."""
    return metrics_lib.predict(model.apply(state.variables, images, train=False), mode)


def eval_step(
    state: TrainState, batch: dict, *, model, num_classes: int, mode: str = "accurate"
) -> jax.Array:
    """(B, C, C): the confusion matrix of each image of one global batch (valid pixels only);
    a padding row, with no valid pixel, is all zeros."""
    predictions = predict_step(state, batch["image"], model=model, mode=mode)
    return metrics_lib.per_image_confusion(predictions, batch["label"], batch["valid"], num_classes)


def detect_step(state: TrainState, images: jax.Array, *, model) -> dict[str, jax.Array]:
    """An instance model's detections of a batch (``MaskRCNN.__call__``)."""
    return model.apply(state.variables, images, train=False)


def foreground_step(state: TrainState, images: jax.Array, *, model, mode: str) -> jax.Array:
    """(B, H, W) foreground probability of a segmentation model (1 - P(background); deep
    supervision averaged in 'accurate' mode, the last head in 'fast'): what the semantic
    instance baseline splits into objects."""
    outputs = model.apply(state.variables, images, train=False)
    return 1.0 - head_probabilities(outputs, mode)[..., 0]
