"""The training loop: ``train_and_evaluate`` (``segjax.train`` is its command line), on a run
that ``segjax.runs`` prepares and scored by ``segjax.scoring``.

Re-running the same command on the same workdir resumes from the latest
readable checkpoint, input pipeline included, as if never stopped. SIGTERM or Ctrl-C saves at
the next step boundary and exits 0 (a second Ctrl-C stops at once). A non-finite loss or gradient
norm stops the run before anything is saved, so the last checkpoint stays good.

Before a run writes anything it checks the whole config (``segjax.validation``), the workdir's
lock and config (``segjax.workdir``), the data, and the checkpoint it resumes from.
"""

import contextlib
import dataclasses
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from segjax import parallel, validation
from segjax import workdir as workdir_lib
from segjax.checkpoint import Checkpointer
from segjax.data import train_iterator
from segjax.defaults import base_config
from segjax.errors import TrainingError, WorkdirError
from segjax.files import write_atomically
from segjax.models.counting import format_macs, summarize
from segjax.pretrained import check_pretrained, load_pretrained
from segjax.reporting import MetricWriter, Progress, describe_metrics, format_duration
from segjax.runs import Run, dataset_record, jit_train_step, prepare, say
from segjax.scoring import evaluate, jit_eval_step
from segjax.steps import (
    TrainState,
)


class _StopRequests:
    """SIGTERM and the first Ctrl-C become a flag checked at step boundaries; a second Ctrl-C
    interrupts at once."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            say("Ctrl-C: saving at the end of this step (Ctrl-C again to stop at once)")

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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


def _write_model_summary(workdir: str, run: Run) -> None:
    config, model, input_shape = run.config, run.model, run.input_shape
    summary = summarize(model, input_shape)
    write_atomically(
        os.path.join(workdir, "model.txt"),
        f"{config.model.arch} / {config.model.encoder or 'plain'} on {run.dataset.name} "
        f"({run.dataset.num_classes} classes), input {input_shape}\n\n"
        f"{summary.table(depth=2)}\n\n"
        f"params: {summary.params:,}\nMACs: {format_macs(summary.macs)} per image\n",
    )
    say(
        f"model: {summary.params:,} params, {format_macs(summary.macs)} MACs per "
        f"{input_shape[1]}x{input_shape[2]} image"
    )


def _on_process_zero(action, what: str) -> None:
    """Runs ``action`` on process 0 only (the workdir is shared); its ``WorkdirError`` stops
    every process, so none is left waiting for the others."""
    error = None
    if jax.process_index() == 0:
        try:
            action()
        except WorkdirError as raised:
            error = raised
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            raise WorkdirError(f"process 0 could not {what}; see its error")
    if error is not None:
        raise error


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, force_config: bool = False
) -> dict[str, float]:
    """Trains, resuming from ``workdir`` if it holds checkpoints; returns the last eval metrics.

    Refuses (``UserError``, nothing written) a bad config or data, a workdir in use, or one
    holding another config unless ``force_config``."""
    config = validation.check_config(config, jax.device_count())  # before anything slow
    workdir_lib.check_path(workdir)
    lock = workdir_lib.WorkdirLock(workdir)
    # A second trainer stops here, before loading anything.
    _on_process_zero(lock.refuse_if_held, "use the workdir")
    run = prepare(config)
    if config.model.pretrained and not _has_checkpoints(workdir):  # a resumed run ignores it
        check_pretrained(config, run.model, run.abstract_state().variables)
    defaults = workdir_lib.as_json(base_config())
    stored, changes = workdir_lib.check_config(workdir, config, defaults, force_config)

    def take_workdir() -> None:
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as error:
            raise WorkdirError(
                f"--workdir {workdir} cannot be created ({error.strerror})"
            ) from None
        lock.acquire()

    _on_process_zero(take_workdir, "take the workdir's lock")
    try:
        return _train(run, workdir, stored, changes, force_config)
    finally:
        lock.release()  # a no-op where it was not taken (processes other than 0)


def _has_checkpoints(workdir: str) -> bool:
    folder = os.path.join(workdir, "checkpoints")
    return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def _restore_or_init(
    run: Run, checkpointer: Checkpointer
) -> tuple[Run, int, TrainState, Any, list]:
    """(the run, the step, state, input-pipeline state and unreadable checkpoints to resume
    from); a new run starting from ``model.pretrained`` comes back with the file's digest in its
    config, so that config.json records which file it was."""
    if not checkpointer.steps():
        start = time.perf_counter()
        state = run.init_state(run.config.seed)
        say(f"initialised in {time.perf_counter() - start:.1f} s")
        if run.config.model.pretrained:
            state, digest = _with_pretrained(run, state)
            config = run.config.copy_and_resolve_references()
            config.model.pretrained_sha256 = digest
            run = dataclasses.replace(run, config=config)
        return run, 0, state, None, []
    step, state, data_state, unreadable = checkpointer.restore_readable(
        checkpointer.candidates("latest"), run.abstract_state(), say
    )
    say(f"resumed from step {step} in {checkpointer.directory}")
    return run, step, state, data_state, unreadable


def _with_pretrained(run: Run, state: TrainState) -> tuple[TrainState, str]:
    """(the state with ``model.pretrained``'s tensors in place, the file's sha256)."""
    local = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state.variables)
    variables, report, digest = load_pretrained(run.config, run.model, local)
    say(report)

    def put(array):
        array = np.asarray(array)
        return jax.make_array_from_callback(array.shape, run.replicated, lambda index: array[index])

    state = state.replace(
        params=jax.tree.map(put, variables["params"]),
        batch_stats=jax.tree.map(put, variables.get("batch_stats", {})),
    )
    return state, digest


def _take_workdir(
    run: Run, workdir: str, stored, changes, forced: bool, start_step: int, unreadable, ckpt
) -> None:
    """The run's first writes, once everything it resumes from has been read."""
    if jax.process_index() == 0:
        for step in unreadable:
            where = ckpt.set_aside(step, os.path.join(workdir, "unreadable_checkpoints"))
            say(f"moved unreadable checkpoint step {step} to {where}")
        if stored is None or changes:
            workdir_lib.write_config(workdir, run.config, changes, start_step, forced)
            _write_model_summary(workdir, run)
        workdir_lib.write_dataset_record(workdir, dataset_record(run))
        if changes:
            say(
                f"config changed on resume ({workdir_lib.describe(changes)}); recorded in "
                f"{os.path.join(workdir, 'config_changes.jsonl')}"
            )
        dropped = workdir_lib.truncate_metrics(workdir, start_step)
        if dropped:
            say(f"metrics.jsonl: dropped {dropped} records after step {start_step}")
    if unreadable and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("unreadable checkpoints set aside")
        ckpt.manager.reload()


def _train(run: Run, workdir: str, stored, changes, forced: bool) -> dict[str, float]:
    config, dataset = run.config, run.dataset
    is_main = jax.process_index() == 0
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), config.keep_checkpoints, config.best_metric
    )
    writer = None
    try:
        run, start_step, state, data_state, unreadable = _restore_or_init(run, checkpointer)
        _take_workdir(run, workdir, stored, changes, forced, start_step, unreadable, checkpointer)
        data_iter = train_iterator(dataset, config.data, config.batch_size, config.seed)
        if data_state is not None:
            data_iter.set_state(data_state)
        p_train, p_eval = jit_train_step(run), jit_eval_step(run)
        purge = start_step + 1 if start_step else None
        writer = MetricWriter(workdir, enabled=is_main, purge_step=purge)
        return _loop(run, state, data_iter, p_train, p_eval, checkpointer, writer, start_step)
    finally:
        checkpointer.wait()
        checkpointer.close()
        if writer is not None:
            writer.close()


class DataWait:
    """The fraction of the training loop's wall time spent waiting for the next batch (the
    pipeline's ``next`` and the copy to the devices) since the last ``restart``: ``with wait:``
    around the wait, ``with wait.paused():`` around what is not training (evaluation,
    checkpoints). Steps are dispatched asynchronously, so a pipeline that keeps ahead of the
    devices costs ~0 and an input-bound run shows its share here."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self._since, self._waited, self._paused = time.perf_counter(), 0.0, 0.0

    def __enter__(self):
        self._start = time.perf_counter()

    def __exit__(self, *exc):
        self._waited += time.perf_counter() - self._start

    @contextlib.contextmanager
    def paused(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - start

    def fraction(self) -> float:
        elapsed = time.perf_counter() - self._since - self._paused
        return min(self._waited / max(elapsed, 1e-9), 1.0)


def window_means(window: list[tuple[int, dict]]) -> dict[str, float]:
    """Each training metric's mean over the logging window's steps (flax's and clu's
    convention): a logged curve that shows the trend, not one step's noise. After a resume the
    first window holds the steps since the resume."""
    return {
        f"train/{key}": float(np.mean([scalars[key] for _, scalars in window]))
        for key in window[-1][1]
    }


def _loop(run, state, data_iter, p_train, p_eval, checkpointer, writer, start_step) -> dict:
    config, schedule = run.config, run.schedule
    if start_step >= config.total_steps:
        say(
            f"the run is at step {start_step} of total_steps={config.total_steps}: nothing to train"
        )
    progress = Progress(config.total_steps, config.batch_size, start_step)
    stop = _StopRequests()
    pending: list[tuple[int, dict]] = []
    window: list[tuple[int, dict]] = []  # fetched step metrics since the last logged step
    eval_metrics: dict[str, float] = {}
    waiting = DataWait()
    try:
        for step in range(start_step + 1, config.total_steps + 1):
            with waiting:
                batch = parallel.to_global(next(data_iter), run.batch_sharding)
            record: dict[str, float] = {}
            if step == start_step + 1:
                compile_start = time.perf_counter()
                state, scalars = p_train(state, batch)
                jax.block_until_ready(scalars)
                record["train/first_step_sec"] = time.perf_counter() - compile_start
                say(f"first step (compile + run): {record['train/first_step_sec']:.1f} s")
                progress = Progress(config.total_steps, config.batch_size, step)
                waiting.restart()
            else:
                state, scalars = p_train(state, batch)
            pending.append((step, scalars))

            last = step == config.total_steps
            if step % config.log_every_steps == 0 or last:
                window += _check_finite(pending, checkpointer)
                pending = []
                record.update(window_means(window))
                window = []
                speed = progress.report(step)
                record["train/lr"] = float(schedule(step - 1))
                wait = waiting.fraction()
                if speed is not None:
                    record["train/img_per_sec"] = speed["img_per_sec"]
                    record["train/steps_per_sec"] = speed["steps_per_sec"]
                    record["train/data_wait_fraction"] = wait
                say(
                    f"step {step}/{config.total_steps}  loss {record['train/loss']:.4f}  "
                    f"lr {record['train/lr']:.2e}  "
                    + (
                        f"{speed['steps_per_sec']:.2f} steps/s  {speed['img_per_sec']:.1f} "
                        f"img/s  data wait {wait:.0%}  ETA {format_duration(speed['eta_sec'])}"
                        if speed is not None
                        else "ETA after the next logged step"
                    )
                )
                waiting.restart()
            evaluate_now = step % config.eval_every_steps == 0 or last
            if evaluate_now:
                eval_start = time.perf_counter()
                with waiting.paused():
                    eval_metrics = evaluate(p_eval, state, run, config.eval_split)
                record.update({f"eval/{k}": v for k, v in eval_metrics.items()})
                record["eval/seconds"] = time.perf_counter() - eval_start
                say(f"eval {config.eval_split} at step {step}: {describe_metrics(eval_metrics)}")
            writer.write(step, record)
            if step % config.checkpoint_every_steps == 0 or evaluate_now or last or stop.requested:
                window += _check_finite(pending, checkpointer)
                pending = []
                with waiting.paused():
                    checkpointer.save(
                        step,
                        state,
                        data_iter.get_state(),
                        metrics=eval_metrics if evaluate_now else None,
                    )
            if stop.requested and not last:
                checkpointer.wait()
                say(
                    f"{stop.signal_name}: saved step {step} to {checkpointer.directory}; re-run "
                    "the same command to resume"
                )
                return eval_metrics
    finally:
        stop.restore()
    return eval_metrics
