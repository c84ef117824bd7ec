"""A run as a library: ``prepare`` (a config -> a checked ``Run``: dataset, model, optimizer,
shardings), ``prepare_without_data`` (from the workdir's dataset record), ``load_config`` and
``restore_for_evaluation`` (a workdir's checkpoint), ``eval_batches`` and the jitted train and
predict steps. Every command reaches a run through this module; the training loop is
``segjax.trainer``, scoring a split ``segjax.scoring``.

``train_step`` (``segjax.steps``) is jit-compiled with explicit shardings over a mesh of all
devices of all processes (batches split on the ``data`` axis, state replicated), the state
donated.
"""

import dataclasses
import functools
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import optax

from segjax import parallel, validation
from segjax import workdir as workdir_lib
from segjax.checkpoint import Checkpointer
from segjax.data import device_augment, eval_dataset, load_dataset
from segjax.data.pipeline import make_preprocess
from segjax.defaults import base_config
from segjax.errors import WorkdirError
from segjax.losses import make_loss
from segjax.models import is_instance_model
from segjax.optim import create_optimizer
from segjax.steps import (
    TrainState,
    create_train_state,
    instance_objective,
    predict_step,
    semantic_objective,
    train_step,
)


def say(message: str) -> None:
    """A line on stdout, from process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


@dataclasses.dataclass(frozen=True)
class Run:
    """What a checked config builds, shared by training, evaluation and the benchmarks."""

    config: ml_collections.ConfigDict
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

    def init_state(self, seed: int) -> TrainState:
        return jax.jit(self.init_fn(), out_shardings=self.replicated)(jax.random.PRNGKey(seed))

    def abstract_state(self) -> TrainState:
        """The state's shapes, dtypes and shardings, without computing it."""
        abstract = jax.eval_shape(self.init_fn(), jax.random.PRNGKey(0))
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated), abstract
        )


def prepare(config: ml_collections.ConfigDict) -> Run:
    """Checks the config (every key, then what needs the data), loads the dataset and defines
    the model and optimizer. Writes nothing but a dataset preparation in the TFDS data dir."""
    config = validation.check_config(config, jax.device_count())
    dataset = load_dataset(config.data)
    in_channels = dataset.split("train")[0]["image"].shape[-1]
    model = validation.check_with_data(config, dataset, in_channels)
    return _assemble(config, dataset, model, in_channels)


def _assemble(config: ml_collections.ConfigDict, dataset, model, in_channels: int) -> Run:
    """The run of a checked config: its optimizer, mesh and shardings around ``model``."""
    tx, schedule = create_optimizer(config.optimizer, config.total_steps)
    mesh = parallel.make_mesh()
    return Run(
        config,
        dataset,
        model,
        tx,
        schedule,
        (1, *config.data.image_size, in_channels),
        parallel.batch_sharding(mesh),
        parallel.replicated(mesh),
    )


def objective_of(run: Run):
    """What the run's train step minimises: Mask R-CNN's losses, or ``config.loss``."""
    if is_instance_model(run.model):
        return instance_objective
    config = run.config
    return semantic_objective(
        make_loss(config.loss.weights.to_dict(), config.loss.options.to_dict())
    )


def jit_train_step(run: Run):
    """``train_step`` for this run's model and loss, jitted over the mesh, the state donated.
    With ``data.augment.on_device`` it takes the pipeline's raw batches and augments them
    first (``segjax.data.device_augment``)."""
    step = functools.partial(
        train_step,
        model=run.model,
        objective=objective_of(run),
        accumulation_steps=run.config.accumulation_steps,
    )
    if run.config.data.augment.on_device:
        step = functools.partial(
            _augmented_step, step=step, preprocess=make_preprocess(run.dataset, run.config.data)
        )
    return jax.jit(
        step,
        in_shardings=(run.replicated, run.batch_sharding),
        out_shardings=(run.replicated, run.replicated),
        donate_argnums=(0,),
    )


def _augmented_step(state, batch, *, step, preprocess):
    return step(state, device_augment.augment_batch(batch, preprocess))


def jit_predict(run: Run):
    return jax.jit(
        functools.partial(predict_step, model=run.model, mode=run.config.deep_supervision_mode),
        in_shardings=(run.replicated, run.batch_sharding),
        out_shardings=run.batch_sharding,
    )


def eval_batches(run: Run, split: str) -> Iterator[tuple[dict, dict]]:
    """(this process's rows, the global batch on the devices) of every eval batch of split."""
    config = run.config
    batches = eval_dataset(
        run.dataset, split, config.data, config.batch_size, row_multiple=jax.device_count()
    )
    for batch in batches:
        yield batch, parallel.to_global(batch, run.batch_sharding)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """A run's config.json (keys added to segjax since it was written take their defaults)."""
    stored = workdir_lib.stored_config(workdir)
    if stored is None:
        path = os.path.join(workdir, "config.json")
        raise WorkdirError(f"{path}: not found; is {workdir} the workdir of a training run?")
    return workdir_lib.as_config(stored, base_config())


def dataset_record(run: Run) -> workdir_lib.DatasetRecord:
    return workdir_lib.DatasetRecord(
        name=str(run.dataset.name),
        class_names=tuple(run.dataset.class_names),
        in_channels=int(run.input_shape[-1]),
    )


def prepare_without_data(
    config: ml_collections.ConfigDict, record: workdir_lib.DatasetRecord
) -> Run:
    """``prepare`` for predicting: the model and optimizer from the config and the workdir's
    dataset record, no data read (``run.dataset`` is the record)."""
    config = validation.check_config(config)
    model = validation.build_model(config, record.num_classes, record.in_channels)
    return _assemble(config, record, model, record.in_channels)


def restore_for_evaluation(
    workdir: str, which: str = "best", need_data: bool = True
) -> tuple[Run, TrainState, int]:
    """(the run, its state, the step) of a workdir's checkpoint ``which`` ('best', 'latest' or
    a step): an unreadable one is reported and the next candidate used. ``need_data=False``
    takes the classes and channels from the workdir's ``dataset.json`` where there is one, so
    the run's data need not be present."""
    config = load_config(workdir)
    record = None if need_data else workdir_lib.read_dataset_record(workdir)
    run = prepare(config) if record is None else prepare_without_data(config, record)
    with read_only_checkpointer(workdir, config) as checkpointer:
        step, state, _, _ = checkpointer.restore_readable(
            checkpointer.candidates(which), run.abstract_state(), say
        )
    return run, state, step


def read_only_checkpointer(workdir: str, config) -> Checkpointer:
    """The run's checkpoints, opened to read (nothing is written or removed)."""
    return Checkpointer(
        os.path.join(workdir, "checkpoints"),
        config.keep_checkpoints,
        config.best_metric,
        read_only=True,
    )


def checkpoint_label(workdir: str, which: str, step: int) -> str:
    """What the restored ``step`` is, for reports: ``which``, except that 'best' of a run whose
    restored step holds no evaluation (it never evaluated, or not with its best_metric) is
    labelled 'latest', not as a best that was never measured."""
    if which != "best":
        return which
    config = load_config(workdir)
    with read_only_checkpointer(workdir, config) as checkpointer:
        scored = (checkpointer.metrics(step) or {}).get(config.best_metric) is not None
    return "best" if scored else "latest"
