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


def write_atomically(path: str, text: str | bytes) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
