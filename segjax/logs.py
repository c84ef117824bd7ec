"""Quieter logs for the command lines: routine warnings of orbax and TFDS dropped, and the
echoes of a checkpoint read that failed (which ``Checkpointer.restore_readable`` reports in one
line) kept off the console. ``quiet_routine_messages`` is called by the entry points
(``segjax.cli.run``), not on import: a program that imports segjax keeps its own logging.
Standard library only, so exported-model prediction imports nothing heavy for it.
"""

import logging
import sys


class _QuietRoutine(logging.Filter):
    """Drops orbax warnings that are routine here: a save without metrics once a best metric is
    tracked (most saves come between evaluations, kept by recency, not score), a manager
    opened read-only (as evaluation does), and the echoes of reads and writes that fail."""

    ROUTINE = (
        "did not provide metrics",
        "read_only=True",
        "Given directory is read only",
        "could not be restored",  # a damaged step, reported in one line by restore_readable
        # A failed background write: its exception reaches the thread that waits for the write
        # (a full disk becomes the Checkpointer's one-line error), so its traceback here is an
        # echo.
        "_SignalingThread.run() raised an exception",
        "in background save thread",
        "Save Finalize thread (save_finalize) failed",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.ROUTINE)


class _QuietFailedReads(logging.Filter):
    """When a damaged step fails to read, orbax's other read tasks of that step fail too, and
    asyncio logs each one's traceback when it is collected; ``restore_readable`` has reported
    the step in one line already."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "exception was never retrieved" not in message or not any(
            text in message for text in ("orbax", "TensorStore", "OCDBT")
        )


# orbax's read coroutines, as named in Python's "coroutine ... was never awaited" warning.
UNAWAITED_READS = (
    r"coroutine '(_read_array_index_and_device_put|_read_and_create_array|async_deserialize"
    r"|_read_shard)' was never awaited"
)


def _abandoned(value: BaseException | None, where: object = None) -> bool:
    code = getattr(where, "cr_code", None)
    return (code is not None and "orbax" in code.co_filename) or (
        isinstance(value, RuntimeError) and str(value) == "Event loop is closed"
    )


def _quiet_abandoned_reads() -> None:
    """After a failed restore, the read tasks orbax abandoned end later: in tensorstore's
    threads, whose callbacks find orbax's event loop closed (printed through sys.excepthook),
    or when collected (sys.unraisablehook). The hooks drop those, which ``restore_readable``
    has reported in one line; anything else still reaches the previous hooks."""
    if getattr(sys.excepthook, "segjax_quiet", False):
        return
    previous_except, previous_unraisable = sys.excepthook, sys.unraisablehook

    def excepthook(kind, value, traceback) -> None:
        if not _abandoned(value):
            previous_except(kind, value, traceback)

    def unraisablehook(unraisable) -> None:
        if not _abandoned(unraisable.exc_value, unraisable.object):
            previous_unraisable(unraisable)

    excepthook.segjax_quiet = True
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


class _QuietTfdsRoutine(logging.Filter):
    """Drops TFDS warnings that are routine here: OpenCV advice (Pillow decodes), and the custom
    configuration and missing dataset_info.json of every new folder dataset."""

    ROUTINE = (
        "OpenCV is not installed",
        "Using custom data configuration",
        "has no dataset_info.json",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.ROUTINE)


def quiet_routine_messages() -> None:
    """Installs the filters and hooks above (once per process)."""
    if getattr(quiet_routine_messages, "installed", False):
        return
    logging.getLogger("absl").addFilter(_QuietRoutine())
    logging.getLogger("absl").addFilter(_QuietTfdsRoutine())
    logging.getLogger("asyncio").addFilter(_QuietFailedReads())
    _quiet_abandoned_reads()
    quiet_routine_messages.installed = True
