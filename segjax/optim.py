"""The optimizer of a run, from ``config.optimizer``: AdamW or SGD with momentum, warmup then
cosine / polynomial / constant learning rate, gradient clipping, weight decay on convolution
and dense kernels only (not on BatchNorm parameters or biases), and for fine-tuning a pretrained
encoder: a learning-rate factor for the encoder and freezing it for the first steps.

Both fine-tuning options scale the encoder's final updates (weight decay included), so a frozen
encoder does not move at all; its gradients still count in the gradient-norm clipping and still
feed the optimizer's moments, so that unfreezing continues with warm moments instead of the
oversized first steps of moments restarted from zero."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "polynomial", "constant")


def learning_rate_schedule(opt: Any, total_steps: int) -> optax.Schedule:
    if opt.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={opt.schedule!r}; choose one of {list(SCHEDULES)}")
    warmup = int(opt.warmup_steps)
    if not 0 <= warmup < total_steps:
        raise ValueError(
            f"optimizer.warmup_steps={warmup} must be in [0, total_steps={total_steps})"
        )
    peak, end = float(opt.learning_rate), float(opt.learning_rate) * float(opt.end_lr_factor)
    decay_steps = total_steps - warmup
    if opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(opt.end_lr_factor))
    elif opt.schedule == "polynomial":
        decay = optax.polynomial_schedule(peak, end, float(opt.power), decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params: Any) -> Any:
    """True for kernels (rank >= 2): convolutions and dense layers."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def encoder_mask(params: Any) -> Any:
    """True for the parameters of the model's encoder (its top-level ``encoder`` sub-tree)."""
    return {
        key: jax.tree.map(lambda _, inside=key == "encoder": inside, value)
        for key, value in params.items()
    }


def encoder_update_scale(factor: float, freeze_steps: int) -> optax.GradientTransformation:
    """Scales the encoder's updates by ``factor``, and by 0 for the first ``freeze_steps``."""

    def scale(count):
        return jnp.where(count < freeze_steps, 0.0, factor)

    return optax.masked(optax.scale_by_schedule(scale), encoder_mask)


def create_optimizer(
    opt: Any, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(opt, total_steps)
    if opt.name == "adamw":
        core = optax.adamw(
            schedule,
            b1=float(opt.b1),
            b2=float(opt.b2),
            weight_decay=float(opt.weight_decay),
            mask=decay_mask,
        )
    elif opt.name == "sgd":
        core = optax.chain(
            optax.add_decayed_weights(float(opt.weight_decay), mask=decay_mask),
            optax.sgd(schedule, momentum=float(opt.momentum), nesterov=bool(opt.nesterov)),
        )
    else:
        raise ValueError(f"optimizer.name={opt.name!r}; choose one of {list(OPTIMIZERS)}")
    parts = [optax.clip_by_global_norm(float(opt.grad_clip_norm))] if opt.grad_clip_norm else []
    parts.append(core)
    factor, freeze = (
        float(opt.get("encoder_lr_factor", 1.0)),
        int(opt.get("freeze_encoder_steps", 0)),
    )
    if factor != 1.0 or freeze:
        parts.append(encoder_update_scale(factor, freeze))
    return optax.chain(*parts), schedule
