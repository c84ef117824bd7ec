"""Scoring a run's state on a split: the jitted eval step and ``evaluate``, the metrics pooled
over the split's pixels, or for an instance model the DSB score and mask AP
(``segjax.instances``). Used by the training loop's periodic evaluation and ``segjax.evaluate``.
"""

import functools

import jax
import numpy as np

from segjax import metrics as metrics_lib
from segjax.instances import evaluate_instances, jit_instances
from segjax.models import is_instance_model
from segjax.runs import Run, eval_batches
from segjax.steps import TrainState, eval_step


def jit_eval_step(run: Run):
    """The step ``evaluate`` runs: confusion matrices, or an instance model's detections."""
    if is_instance_model(run.model):
        return jit_instances(run)
    return jax.jit(
        functools.partial(
            eval_step,
            model=run.model,
            num_classes=run.dataset.num_classes,
            mode=run.config.deep_supervision_mode,
        ),
        in_shardings=(run.replicated, run.batch_sharding),
        out_shardings=run.replicated,
    )


def evaluate(eval_fn, state: TrainState, run: Run, split: str) -> dict[str, float]:
    """Metrics of ``state`` over the whole split: pooled over its pixels, or for an instance
    model the DSB score and mask AP (``segjax.instances``)."""
    if is_instance_model(run.model):
        return evaluate_instances(eval_fn, state, run, split)
    confusion = 0
    for _, batch in eval_batches(run, split):
        confusion = confusion + np.asarray(eval_fn(state, batch).addressable_data(0)).sum(axis=0)
    return metrics_lib.summarize(confusion, list(run.dataset.class_names))
