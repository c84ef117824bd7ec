"""Reading and writing the small files of runs and datasets: JSON read with an error naming the
file, and files replaced atomically (written beside, then renamed), so that a crash leaves the
old or the new version, never half of one."""

import json
import os


def read_json(path: str, error: type[Exception]):
    """The JSON content of ``path``, None if there is no such file; ``error`` (an exception
    class) naming the file if it cannot be read or parsed."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as problem:
        raise error(f"{path}: not readable JSON ({problem})") from None


TEMPORARY = ".tmp-"  # PATH.tmp-PID: where write_atomically writes before renaming


def write_atomically(path: str, text: str | bytes) -> None:
    """Writes ``path`` through ``PATH.tmp-PID`` and a rename. The temporary file is removed on
    every failure (a full disk, ``path`` a directory, an interrupt), and temporaries of ``path``
    left by a writer that was killed (its process gone) are removed first."""
    remove_stale_temporaries(path)
    temporary = f"{path}{TEMPORARY}{os.getpid()}"
    try:
        with open(temporary, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


def remove_stale_temporaries(path: str) -> None:
    """Removes ``PATH.tmp-PID`` files whose writing process no longer exists."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        head, sep, pid = entry.rpartition(TEMPORARY)
        if sep and head == name and pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(directory, entry))
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
