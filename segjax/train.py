"""Training: ``python -m segjax.train --config configs/resnet_unet.py --workdir runs/x``.

``train_step`` and ``eval_step`` are pure functions, jit-compiled with explicit shardings over a
mesh of all devices of all processes (batches split on the ``data`` axis, state replicated), the
state donated. Re-running the same command on the same workdir resumes from the latest
checkpoint, input pipeline included, as if never stopped. SIGTERM (e.g. TPU preemption) saves at
the next step boundary and exits 0. A non-finite loss or gradient norm stops the run before
anything is saved, so the last checkpoint stays good.
"""

import dataclasses
import functools
import json
import os
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from flax.training import train_state
from ml_collections import config_flags

from segjax import metrics as metrics_lib
from segjax import parallel
from segjax.checkpoint import Checkpointer
from segjax.cli import parse_flags
from segjax.data import DataError, eval_dataset, load_dataset, train_iterator
from segjax.losses import make_loss
from segjax.models import ARCHS, create_model
from segjax.models.summary import format_macs, summarize
from segjax.optim import create_optimizer
from segjax.reporting import MetricWriter, Progress, format_duration


class TrainState(train_state.TrainState):
    batch_stats: Any
    dropout_rng: jax.Array  # raw uint32 key; folded with the step for each step's dropout


class TrainingError(RuntimeError):
    """A run that must stop: the message says why and what was kept."""


def model_from_config(model_config: Any, num_classes: int, in_channels: int):
    """``create_model`` from ``config.model``: '' / () / prune_level 0 mean "the default"."""
    arch = model_config.arch
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r} is not valid; choose one of {list(ARCHS)}")
    options = {}
    for key in ARCHS[arch]:
        value = model_config.get(key)
        if value is None or value == "" or value == () or (key == "prune_level" and not value):
            continue
        options[key] = tuple(value) if isinstance(value, list | tuple) else value
    return create_model(
        arch,
        model_config.encoder or None,
        num_classes=num_classes,
        in_channels=in_channels,
        **options,
    )


def create_train_state(rng: jax.Array, model, tx, input_shape) -> TrainState:
    init_rng, dropout_rng = jax.random.split(rng)
    variables = model.init(init_rng, jnp.zeros(input_shape, jnp.float32), train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        dropout_rng=dropout_rng,
    )


def train_step(
    state: TrainState, batch: dict, *, model, loss_fn, accumulation_steps: int = 1
) -> tuple[TrainState, dict]:
    """One optimizer update on a global batch, split into ``accumulation_steps`` micro-batches
    whose gradients are averaged. Returns the new state and scalar metrics."""
    step_rng = jax.random.fold_in(state.dropout_rng, state.step)

    def loss_and_stats(params, batch_stats, micro, rng):
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        outputs, updates = model.apply(
            variables, micro["image"], train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        loss, parts = loss_fn(outputs, micro["label"], micro["valid"])
        return loss, (updates.get("batch_stats", batch_stats), parts)

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


def eval_step(
    state: TrainState, batch: dict, *, model, num_classes: int, mode: str = "accurate"
) -> jax.Array:
    """(B, C, C): the confusion matrix of each image of one global batch (valid pixels only);
    a padding row, with no valid pixel, is all zeros."""
    variables = {
        "params": state.params,
        **({"batch_stats": state.batch_stats} if state.batch_stats else {}),
    }
    outputs = model.apply(variables, batch["image"], train=False)
    predictions = metrics_lib.predict(outputs, mode)
    return metrics_lib.per_image_confusion(predictions, batch["label"], batch["valid"], num_classes)


def evaluate(eval_fn, state, dataset, split: str, config, sharding) -> dict[str, float]:
    confusion = 0
    batches = eval_dataset(
        dataset, split, config.data, config.batch_size, row_multiple=jax.device_count()
    )
    for batch in batches:
        result = eval_fn(state, parallel.to_global(batch, sharding))
        confusion = confusion + np.asarray(result.addressable_data(0)).sum(axis=0)
    return metrics_lib.summarize(confusion, list(dataset.class_names))


def _check_finite(pending: list[tuple[int, dict]], checkpointer: Checkpointer) -> list:
    """Fetches the pending step metrics; stops the run at the first non-finite one."""
    fetched = [(step, jax.device_get(m)) for step, m in pending]
    for step, scalars in fetched:
        if not (np.isfinite(scalars["loss"]) and np.isfinite(scalars["grad_norm"])):
            kept = checkpointer.latest_step()
            raise TrainingError(
                f"non-finite loss at step {step} (loss={scalars['loss']}, grad_norm="
                f"{scalars['grad_norm']}); nothing saved after it, the last good checkpoint is "
                + (f"step {kept} in {checkpointer.directory}" if kept is not None else "none")
                + " (try a lower optimizer.learning_rate or optimizer.grad_clip_norm)"
            )
    return fetched


def _write_run_info(workdir: str, config, model, input_shape, dataset) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    summary = summarize(model, input_shape)
    with open(os.path.join(workdir, "model.txt"), "w") as f:
        f.write(
            f"{config.model.arch} / {config.model.encoder or 'plain'} on {dataset.name} "
            f"({dataset.num_classes} classes), input {input_shape}\n\n"
        )
        f.write(summary.table(depth=2) + "\n\n")
        f.write(f"params: {summary.params:,}\nMACs: {format_macs(summary.macs)} per image\n")
    _say(
        f"model: {summary.params:,} params, {format_macs(summary.macs)} MACs per "
        f"{input_shape[1]}x{input_shape[2]} image"
    )


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


class _Preemption:
    """Turns SIGTERM into a flag checked at step boundaries."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True


@dataclasses.dataclass(frozen=True)
class Run:
    """What a config builds, shared by training and evaluation."""

    dataset: Any
    model: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    input_shape: tuple[int, ...]
    batch_sharding: Any
    replicated: Any

    def init_fn(self):
        return functools.partial(
            create_train_state, model=self.model, tx=self.tx, input_shape=self.input_shape
        )


def setup_run(config: ml_collections.ConfigDict) -> Run:
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    if config.batch_size % (config.accumulation_steps * jax.device_count()):
        raise ValueError(
            f"batch_size={config.batch_size} must be a multiple of "
            f"accumulation_steps x devices ({config.accumulation_steps} x "
            f"{jax.device_count()})"
        )
    dataset = load_dataset(config.data)
    in_channels = dataset.split("train")[0]["image"].shape[-1]
    model = model_from_config(config.model, dataset.num_classes, in_channels)
    tx, schedule = create_optimizer(config.optimizer, config.total_steps)
    return Run(
        dataset,
        model,
        tx,
        schedule,
        (1, *config.data.image_size, in_channels),
        parallel.batch_sharding(mesh),
        parallel.replicated(mesh),
    )


def jit_train_step(run: Run, config: ml_collections.ConfigDict):
    """``train_step`` for this run's model and loss, jitted over the mesh, the state donated."""
    loss_fn = make_loss(config.loss.weights.to_dict(), config.loss.options.to_dict())
    return jax.jit(
        functools.partial(
            train_step,
            model=run.model,
            loss_fn=loss_fn,
            accumulation_steps=config.accumulation_steps,
        ),
        in_shardings=(run.replicated, run.batch_sharding),
        out_shardings=(run.replicated, run.replicated),
        donate_argnums=(0,),
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (resuming from ``workdir`` if it holds checkpoints); returns the last eval
    metrics."""
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    run = setup_run(config)
    dataset, model, schedule = run.dataset, run.model, run.schedule
    batch_sharding, replicated = run.batch_sharding, run.replicated
    input_shape = run.input_shape

    init = jax.jit(run.init_fn(), out_shardings=replicated)
    start = time.perf_counter()
    state = init(jax.random.PRNGKey(config.seed))
    _say(f"initialised in {time.perf_counter() - start:.1f} s")
    if is_main:
        _write_run_info(workdir, config, model, input_shape, dataset)

    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), config.keep_checkpoints, config.best_metric
    )
    data_iter = train_iterator(dataset, config.data, config.batch_size, config.seed)
    start_step = checkpointer.latest_step() or 0
    if start_step:
        state, data_state = checkpointer.restore(start_step, state)
        data_iter.set_state(data_state)
        _say(f"resumed from step {start_step} in {checkpointer.directory}")

    p_train = jit_train_step(run, config)
    p_eval = jax.jit(
        functools.partial(
            eval_step,
            model=model,
            num_classes=dataset.num_classes,
            mode=config.deep_supervision_mode,
        ),
        in_shardings=(replicated, batch_sharding),
        out_shardings=replicated,
    )

    writer = MetricWriter(workdir, enabled=is_main)
    progress = Progress(config.total_steps, config.batch_size, start_step)
    preemption = _Preemption()
    pending: list[tuple[int, dict]] = []
    eval_metrics: dict[str, float] = {}
    try:
        for step in range(start_step + 1, config.total_steps + 1):
            batch = parallel.to_global(next(data_iter), batch_sharding)
            if step == start_step + 1:
                compile_start = time.perf_counter()
                state, scalars = p_train(state, batch)
                jax.block_until_ready(scalars)
                compile_seconds = time.perf_counter() - compile_start
                _say(f"first step (compile + run): {compile_seconds:.1f} s")
                writer.write(step, {"train/first_step_sec": compile_seconds})
                progress = Progress(config.total_steps, config.batch_size, step)
            else:
                state, scalars = p_train(state, batch)
            pending.append((step, scalars))

            record: dict[str, float] = {}
            last = step == config.total_steps
            if step % config.log_every_steps == 0 or last:
                fetched = _check_finite(pending, checkpointer)
                pending = []
                step_scalars = fetched[-1][1]
                speed = progress.report(step)
                record.update({f"train/{k}": float(v) for k, v in step_scalars.items()})
                record.update(
                    {
                        "train/lr": float(schedule(step - 1)),
                        "train/img_per_sec": speed["img_per_sec"],
                        "train/steps_per_sec": speed["steps_per_sec"],
                    }
                )
                print(
                    f"step {step}/{config.total_steps}  loss {record['train/loss']:.4f}  "
                    f"lr {record['train/lr']:.2e}  {speed['steps_per_sec']:.2f} steps/s  "
                    f"{speed['img_per_sec']:.1f} img/s  ETA "
                    f"{format_duration(speed['eta_sec'])}",
                    flush=True,
                )
            evaluate_now = step % config.eval_every_steps == 0 or last
            if evaluate_now:
                eval_start = time.perf_counter()
                eval_metrics = evaluate(
                    p_eval, state, dataset, config.eval_split, config, batch_sharding
                )
                record.update({f"eval/{k}": v for k, v in eval_metrics.items()})
                record["eval/seconds"] = time.perf_counter() - eval_start
                print(
                    f"eval {config.eval_split} at step {step}: mIoU {eval_metrics['miou']:.4f}"
                    f"  Dice {eval_metrics['dice']:.4f}  pixel accuracy "
                    f"{eval_metrics['pixel_accuracy']:.4f}",
                    flush=True,
                )
            writer.write(step, record)
            if (
                step % config.checkpoint_every_steps == 0
                or evaluate_now
                or last
                or preemption.requested
            ):
                _check_finite(pending, checkpointer)
                pending = []
                checkpointer.save(
                    step,
                    state,
                    data_iter.get_state(),
                    metrics=eval_metrics if evaluate_now else None,
                )
            if preemption.requested and not last:
                checkpointer.wait()
                print(
                    f"SIGTERM: saved step {step} to {checkpointer.directory}; re-run the same "
                    "command to resume",
                    flush=True,
                )
                return eval_metrics
    finally:
        checkpointer.wait()
        checkpointer.close()
        writer.close()
    return eval_metrics


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so importing this module
    (as segjax.evaluate does) defines none."""
    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for checkpoints and logs")
    flags.DEFINE_string(
        "coordinator", None, "host:port of process 0, for multi-process runs started by hand"
    )
    flags.DEFINE_integer("num_processes", None, "with --coordinator")
    flags.DEFINE_integer("process_id", None, "with --coordinator")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    args = flags.FLAGS
    if args.config is None or not args.workdir:
        raise app.UsageError("--config and --workdir are required")
    logging.set_verbosity(logging.WARNING)
    parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    try:
        metrics = train_and_evaluate(args.config, args.workdir)
    except (ValueError, DataError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    if metrics and jax.process_index() == 0:
        print(
            json.dumps(
                {
                    k: round(v, 4)
                    for k, v in metrics.items()
                    if k in ("miou", "dice", "pixel_accuracy")
                }
            )
        )


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
