"""The workdir contract: what a run may find in its workdir, and what it may change there.

- ``config.json`` is the run's config, written by its first run. A rerun compares its config with
  it and is refused unless they differ only in ``RESUMABLE_KEYS`` (run length and cadence, input
  threads, where TFDS data lives) or ``--force_config`` is given; a change that is taken is
  recorded in ``config_changes.jsonl``. Nothing in the workdir is written before the config is
  checked and the checkpoint restored.
- ``train.lock`` holds the pid, host and command of the trainer using the workdir. It is an
  ``flock`` too, so the kernel releases it when that process ends, however it ends: a lock left
  by a killed run is stale and taken over; a live one makes a second trainer exit at once.
- ``dataset.json`` records what predicting needs of the run's dataset (its name, class names
  and image channels), so ``segjax.predict`` and ``segjax.export`` need no data; every start
  rewrites it.
- Files are replaced atomically (``segjax.files``); ``metrics.jsonl`` is cut back to the
  restored step on resume, so it never holds a step twice.
"""

import dataclasses
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

import ml_collections

from segjax.errors import WorkdirError
from segjax.files import read_json, write_atomically
from segjax.validation import flatten

# Keys that may differ between a workdir's config.json and a rerun resuming it. total_steps: a
# longer (or shorter) run; its learning-rate schedule then spans the new length from the
# restored step on. model.conv_impl: the same model, computed another way (e.g. resumed on GPU).
RESUMABLE_KEYS = (
    "total_steps",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "data.num_threads",
    "data.prefetch",
    "data.data_dir",
    "model.conv_impl",
)
LOCK_NAME = "train.lock"


def check_path(workdir: str) -> None:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir}: exists and is not a directory")


def stored_config(workdir: str) -> dict | None:
    """The workdir's config.json as a dict, or None if there is none."""
    return read_json(os.path.join(workdir, "config.json"), WorkdirError)


def as_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def config_differences(stored: dict, new: dict, defaults: dict) -> dict[str, tuple]:
    """{key: (stored value, new value)} of the keys that differ; a key missing from the stored
    config (written by an older segjax) counts as its default."""
    old, now, base = flatten(stored), flatten(new), flatten(defaults)
    missing = object()
    changes = {}
    for key in sorted(set(old) | set(now)):
        before, after = old.get(key, base.get(key, missing)), now.get(key, missing)
        if before != after:
            changes[key] = (None if before is missing else before, after)
    return changes


def describe(changes: dict[str, tuple], limit: int = 6) -> str:
    parts = [f"{key} {old!r} -> {new!r}" for key, (old, new) in list(changes.items())[:limit]]
    more = len(changes) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def check_config(
    workdir: str, config: ml_collections.ConfigDict, defaults: dict, force: bool
) -> tuple[dict | None, dict[str, tuple]]:
    """(the stored config, the changes this run makes to it); raises ``WorkdirError`` if the
    workdir holds a run of another config and ``force`` is not set. Writes nothing, except that
    an empty ``model.pretrained_sha256`` takes the digest config.json recorded for the same
    ``model.pretrained``."""
    stored = stored_config(workdir)
    if stored is None:
        return None, {}
    recorded = stored.get("model", {})
    same_file = recorded.get("pretrained") == config.model.pretrained
    if same_file and not config.model.pretrained_sha256:
        # The digest the first run recorded for the file this config names.
        config.model.pretrained_sha256 = recorded.get("pretrained_sha256", "")
    changes = config_differences(stored, as_json(config), defaults)
    fixed = {k: v for k, v in changes.items() if k not in RESUMABLE_KEYS}
    if fixed and not force:
        raise WorkdirError(
            f"{os.path.join(workdir, 'config.json')} is the config of another run: "
            f"{describe(fixed)}; rerun with that config, use a new --workdir, or pass "
            f"--force_config to resume this run with the new one (keys that may change on "
            f"resume: {', '.join(RESUMABLE_KEYS)})"
        )
    return stored, changes


def write_config(
    workdir: str,
    config: ml_collections.ConfigDict,
    changes: dict[str, tuple],
    step: int,
    forced: bool,
) -> None:
    """config.json, and a line in config_changes.jsonl for a rerun that changed it."""
    text = config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
    write_atomically(os.path.join(workdir, "config.json"), text)
    if changes:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resumed_from_step": step,
            "forced": forced,
            "changes": {key: [old, new] for key, (old, new) in changes.items()},
        }
        with open(os.path.join(workdir, "config_changes.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


def truncate_metrics(workdir: str, step: int) -> int:
    """Drops the records after ``step`` from metrics.jsonl (logged by a run that was stopped
    before it could save them): a resumed run logs those steps again. Returns how many."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by a kill
    if len(kept) != len(lines):
        write_atomically(path, "".join(kept))
    return len(lines) - len(kept)


class WorkdirLock:
    """``train.lock`` in the workdir: an exclusive flock plus who holds it."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.fd: int | None = None

    def holder(self) -> dict | None:
        """Who holds the lock now (pid, host, started, command), or None if nobody does."""
        if not os.path.exists(self.path):
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it: a lock file left by a run that was killed
        except OSError:
            return self._read() or {"pid": "?", "host": "?"}
        finally:
            os.close(fd)

    def _read(self) -> dict | None:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def refuse_if_held(self) -> None:
        holder = self.holder()
        if holder is not None:
            raise WorkdirError(self._held_message(holder))

    def _held_message(self, holder: dict) -> str:
        return (
            f"workdir {os.path.dirname(self.path)} is in use by pid {holder.get('pid')} on "
            f"{holder.get('host')} since {holder.get('started', '?')} "
            f"({holder.get('command', '?')}); wait for it to finish or stop it (lock file "
            f"{self.path})"
        )

    def acquire(self) -> None:
        """Takes the lock or raises ``WorkdirError`` naming its holder (or why the workdir
        cannot be written)."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise WorkdirError(
                    f"workdir {os.path.dirname(self.path)} cannot be written ({error.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise WorkdirError(
                    self._held_message(self._read() or {"pid": "?", "host": "?"})
                ) from None
            try:  # the file we locked may have been removed by a holder releasing it
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        pid = os.getpid()
        record = {
            "pid": pid,
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def as_config(stored: dict, defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A stored config.json over ``defaults``, so a workdir written by an older segjax (without
    keys added since) reads as the config it ran with."""
    config = defaults.copy_and_resolve_references()
    _update(config, stored)
    return config


def _update(config: ml_collections.ConfigDict, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
            _update(config[key], value)
        else:
            with config.ignore_type():
                config[key] = tuple(value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    """What a trained run needs of its dataset to predict: ``dataset.json`` in its workdir."""

    name: str
    class_names: tuple[str, ...]
    in_channels: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASET_RECORD = "dataset.json"


def write_dataset_record(workdir: str, record: DatasetRecord) -> None:
    text = json.dumps(
        {
            "name": record.name,
            "class_names": list(record.class_names),
            "in_channels": record.in_channels,
        },
        indent=2,
    )
    write_atomically(os.path.join(workdir, DATASET_RECORD), text + "\n")


def read_dataset_record(workdir: str) -> DatasetRecord | None:
    """The workdir's dataset record; None for a workdir written before segjax kept one."""
    path = os.path.join(workdir, DATASET_RECORD)
    stored = read_json(path, WorkdirError)
    if stored is None:
        return None
    try:
        record = DatasetRecord(
            name=str(stored["name"]),
            class_names=tuple(str(n) for n in stored["class_names"]),
            in_channels=int(stored["in_channels"]),
        )
    except (KeyError, TypeError, ValueError) as problem:
        raise WorkdirError(
            f"{path}: expected name, class_names and in_channels ({problem!r}); delete it and "
            "segjax.evaluate on the workdir writes it again"
        ) from None
    if record.num_classes < 2 or record.in_channels < 1:
        raise WorkdirError(f"{path}: {record} is not a trained run's dataset")
    return record
