"""The exceptions a user can cause, and the exit code each ends a command with.

- ``UserError`` (exit 2): the command was refused before doing anything: a bad flag, config key or
  value, bad data, a workdir in use or holding another run. Nothing was written.
- ``RunError`` (exit 1): the work started and could not finish: a non-finite loss, no readable
  checkpoint, a failed sweep member. What was kept is in the message.

Every command prints such an error as one ``error: ...`` line (``segjax.cli.run``); anything else
is a bug and keeps its traceback, with the one-line summary last.
"""


class UserError(Exception):
    """A refused command (exit 2); the message names the flag, key, file or workdir at fault."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config key with a bad value, or keys that do not fit together."""


class WorkdirError(UserError):
    """A workdir that cannot take this run: in use, holding another run's config, not writable."""


class RunError(Exception):
    """Work that started and had to stop (exit 1); the message says why and what was kept."""

    exit_code = 1


class CheckpointError(RunError):
    """A checkpoint could not be read (none of a run's) or written (a full disk)."""


class TrainingError(RunError):
    """A training run that must stop, e.g. at a non-finite loss."""


def check_batch_size(batch_size: int, unit: int, what: str, error: type[Exception]) -> None:
    """One check, one message, wherever a batch is split: ``batch_size`` must be a positive
    multiple of ``unit``, the number of parts ``what`` describes."""
    if batch_size < 1 or batch_size % unit:
        raise error(f"batch_size={batch_size} must be a positive multiple of {what} ({unit})")
