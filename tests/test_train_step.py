"""The train step in-process on tiny models: gradient accumulation and bfloat16 compute."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segjax.losses import make_loss
from segjax.models import create_model
from segjax.steps import create_train_state, train_step

SHAPE = (8, 16, 16, 3)
NUM_CLASSES = 3


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=SHAPE).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES, SHAPE[:3]).astype(np.int32),
        "valid": np.ones(SHAPE[:3], bool),
    }


def sgd():
    # Plain SGD: the update is proportional to the gradient, so the updated parameters compare
    # gradients directly (Adam's normalisation would hide small differences).
    return optax.sgd(0.1)


def step_fn(model, accumulation_steps=1):
    loss_fn = make_loss({"cross_entropy": 1.0})
    return jax.jit(
        functools.partial(
            train_step, model=model, loss_fn=loss_fn, accumulation_steps=accumulation_steps
        )
    )


def test_gradient_accumulation_matches_one_full_batch():
    # The paper U-Net without batch norm or dropout: the loss is a mean over pixels, so the mean
    # of the micro-batch gradients equals the full-batch gradient.
    model = create_model(
        "unet_paper", num_classes=NUM_CLASSES, filters=(4, 8, 16), dropout=0.0, norm=None
    )
    state = create_train_state(jax.random.key(0), model, sgd(), (1, *SHAPE[1:]))
    data = batch()
    full, full_metrics = step_fn(model)(state, data)
    accumulated, acc_metrics = step_fn(model, accumulation_steps=4)(state, data)

    np.testing.assert_allclose(acc_metrics["loss"], full_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(acc_metrics["grad_norm"], full_metrics["grad_norm"], rtol=1e-4)
    changed = jax.tree.map(lambda a, b: np.abs(a - b).max(), full.params, state.params)
    assert max(jax.tree.leaves(changed)) > 1e-3  # the step did move the parameters
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        accumulated.params,
        full.params,
    )
    assert int(accumulated.step) == int(full.step) == 1


def test_accumulation_with_batch_norm_updates_statistics_once_per_micro_batch():
    model = create_model("unet", "resnet18", num_classes=NUM_CLASSES, encoder_depth=3)
    state = create_train_state(jax.random.key(0), model, sgd(), (1, *SHAPE[1:]))
    new_state, metrics = step_fn(model, accumulation_steps=2)(state, batch())
    assert np.isfinite(metrics["loss"])
    # Running statistics moved away from their initial values, and stayed finite.
    before = jax.tree.leaves(state.batch_stats)
    after = jax.tree.leaves(new_state.batch_stats)
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    assert all(np.isfinite(a).all() for a in after)


def test_bfloat16_compute_keeps_float32_parameters_and_loss():
    config = {"num_classes": NUM_CLASSES, "encoder_depth": 3}
    model32 = create_model("unet", "resnet18", **config)
    model16 = create_model("unet", "resnet18", dtype="bfloat16", **config)
    state = create_train_state(jax.random.key(0), model32, sgd(), (1, *SHAPE[1:]))
    data = batch()

    logits = jax.jit(lambda v, x: model16.apply(v, x, train=False))(state.variables, data["image"])
    assert logits.dtype == jnp.float32  # the head casts back: the loss is computed in float32

    new32, metrics32 = step_fn(model32)(state, data)
    new16, metrics16 = step_fn(model16)(state, data)
    assert metrics16["loss"].dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new16.params))
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(new16.batch_stats))
    # bfloat16 keeps ~3 significant digits: the same loss and nearly the same update direction
    # (a float32 run in another summation order gives cosine ~1; broken casts give far less).
    np.testing.assert_allclose(metrics16["loss"], metrics32["loss"], rtol=2e-2)
    delta32 = ravel(jax.tree.map(jnp.subtract, new32.params, state.params))
    delta16 = ravel(jax.tree.map(jnp.subtract, new16.params, state.params))
    cosine = delta16 @ delta32 / (np.linalg.norm(delta16) * np.linalg.norm(delta32))
    assert cosine > 0.9, cosine


def ravel(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])
