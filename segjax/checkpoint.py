"""Checkpoints with orbax: the train state and the input pipeline's state, saved together.

Saves are asynchronous and atomic (orbax writes a temporary directory and renames it when
complete; temporary directories left by a crash are removed when the next run opens the
manager), so a kill never leaves a half-written step. The last ``keep`` checkpoints are kept, plus
the best by ``best_metric``, whose eval metrics orbax stores with each evaluated step: that is the
one notion of "best", used by training and evaluation alike.

A step can still be unreadable later (a truncated file, a disk error). ``restore_readable`` then
says so in one line and tries the next candidate, never starting over silently; a checkpoint that
reads but holds another model's tree is a ``CheckpointMismatch``, not a fallback.
"""

import contextlib
import errno
import os
import shutil
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from segjax.errors import CheckpointError, UserError
from segjax.logs import UNAWAITED_READS


class CheckpointMismatch(UserError):
    """A readable checkpoint whose tree is not the one this config builds."""


class Checkpointer:
    def __init__(
        self,
        directory: str,
        keep: int = 2,
        best_metric: str | None = "miou",
        asynchronous: bool = True,
        read_only: bool = False,
    ):
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric or None
        best_fn = (lambda metrics: metrics[best_metric]) if best_metric else None
        preserve: list = [policies.LatestN(n=max(int(keep), 1))]
        if best_fn:
            preserve.append(
                policies.BestN(get_metric_fn=best_fn, n=1, keep_checkpoints_without_metrics=False)
            )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                # best_fn makes orbax write each step's metrics to disk, so the best checkpoint
                # is still known (and kept) after a restart.
                best_fn=best_fn,
                preservation_policy=policies.AnyPreservationPolicy(preserve),
                enable_async_checkpointing=asynchronous,
                cleanup_tmp_directories=not read_only,
                read_only=read_only,
                create=not read_only,
            ),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
            },
        )

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.wait()
        self.close()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def metrics(self, step: int) -> dict | None:
        """The eval metrics saved with ``step``, or None (also if they cannot be read)."""
        try:
            return self.manager.metrics(step) or None
        except Exception:  # a damaged step: it will be reported when it is restored
            return None

    def candidates(self, which: str = "latest") -> list[int]:
        """Steps to restore, most wanted first: 'latest' (newest first); 'best' (by the saved
        ``best_metric``, then the steps without metrics, newest first); or one step number."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if which == "latest":
            return steps[::-1]
        if which == "best":
            scored = {}
            if self.best_metric:
                for step in steps:
                    value = (self.metrics(step) or {}).get(self.best_metric)
                    if isinstance(value, int | float) and value == value:  # not nan
                        scored[step] = value
            best = sorted(scored, key=lambda s: (-scored[s], -s))
            return best + [s for s in steps[::-1] if s not in scored]
        if which.isdigit() and int(which) in steps:
            return [int(which)]
        raise UserError(f"--checkpoint={which}: choose best, latest or one of {steps}")

    def save(self, step: int, state: Any, data_state: dict, metrics: dict | None = None) -> None:
        self.wait()  # the step still being written fails under its own number, not this one's
        with self._disk_full_is_an_error(step):
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
                ),
                metrics=metrics,
                force=True,
            )
        self._writing = step

    @contextlib.contextmanager
    def _disk_full_is_an_error(self, step: int | None):
        """A full disk while writing a step (orbax raises it as RESOURCE_EXHAUSTED, or as an
        OSError) becomes a ``CheckpointError`` naming the step and the directory; the step's
        partial temporary directory is removed, the steps written before stay as they were."""
        try:
            yield
        except Exception as error:
            text = str(error)
            full = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or any(
                sign in text for sign in ("RESOURCE_EXHAUSTED", "No space left")
            )
            if not full:
                raise
            for name in os.listdir(self.directory):
                if ".orbax-checkpoint-tmp" in name:
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
            which = f"checkpoint {step}" if step is not None else "a checkpoint"
            raise CheckpointError(
                f"no space left writing {which} in {self.directory} ({text.splitlines()[0]}); "
                "the checkpoints written before are intact: free some space and run the same "
                "command to resume"
            ) from None

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """The state (with ``like``'s structure, dtypes and shardings) and data state at step.
        Raises ``CheckpointMismatch`` if the step holds another tree, or orbax's error if it
        cannot be read."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                ),
            )
        except Exception:
            self._check_tree(step, abstract)  # a mismatch, or the read error itself
            raise
        return restored.state, restored.data

    def _check_tree(self, step: int, abstract: Any) -> None:
        """Raises ``CheckpointMismatch`` if the step's metadata can be read and its arrays are
        not those of ``abstract`` (another model or optimizer)."""
        try:
            saved = self.manager.item_metadata(step)["state"]
        except Exception:
            return  # the metadata itself is unreadable: a damaged step, not a mismatch
        if saved is None:
            return
        ours, theirs = _leaves(abstract), _leaves(saved)
        if ours == theirs:
            return
        missing = sorted(set(ours) - set(theirs))
        extra = sorted(set(theirs) - set(ours))
        shapes = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
        parts = [
            f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (
                ("not in the checkpoint:", missing),
                ("only in the checkpoint:", extra),
                ("other shape:", shapes),
            )
            if keys
        ]
        raise CheckpointMismatch(
            f"checkpoint step {step} in {self.directory} holds another model or optimizer than "
            f"this config builds ({'; '.join(parts)})"
        )

    def restore_readable(
        self, candidates: list[int], like: Any, say: Callable[[str], None]
    ) -> tuple[int, Any, dict, list[int]]:
        """Restores the first readable step of ``candidates``: (step, state, data state, the
        unreadable steps tried before it, each reported through ``say`` in one line)."""
        unreadable = []
        for position, step in enumerate(candidates):
            try:
                state, data = self.restore(step, like)
                return step, state, data, unreadable
            except CheckpointMismatch:
                raise
            except Exception as error:  # orbax / tensorstore raise many kinds for a bad file
                # Its abandoned read coroutines may be collected unawaited, at exit even.
                warnings.filterwarnings("ignore", UNAWAITED_READS, RuntimeWarning)
                unreadable.append(step)
                rest = candidates[position + 1 :]
                say(
                    f"checkpoint step {step} in {self.directory} cannot be read "
                    f"({_first_line(error)}); "
                    + (f"trying step {rest[0]}" if rest else "no other step to try")
                )
        raise CheckpointError(
            f"no readable checkpoint in {self.directory} (tried steps {candidates}); the run's "
            "files are left as they are"
        )

    def set_aside(self, step: int, destination: str) -> str:
        """Moves an unreadable step out of the way of new saves, into ``destination`` (kept for
        inspection, never deleted). Returns where it went."""
        os.makedirs(destination, exist_ok=True)
        target = os.path.join(destination, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(os.path.join(self.directory, str(step)), target)
        self.manager.reload()
        return target

    def wait(self) -> None:
        with self._disk_full_is_an_error(getattr(self, "_writing", None)):
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _leaves(tree: Any) -> dict[str, tuple]:
    """{path: shape} of a tree's arrays, paths spelt the same for dataclasses, dicts, tuples and
    named tuples."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = []
        for entry in path:
            for attribute in ("key", "name", "idx"):
                if hasattr(entry, attribute):
                    keys.append(str(getattr(entry, attribute)))
                    break
        out["/".join(keys)] = tuple(getattr(leaf, "shape", ()) or ())
    return out


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0].split(" See full TensorStore details")[0] if lines else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
