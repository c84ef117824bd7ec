"""segjax/files.py: atomic writes leave no temporary file behind, whatever happens."""

import os
import subprocess
import sys

import pytest

from segjax.files import TEMPORARY, write_atomically


def leftovers(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if TEMPORARY in name)


def test_a_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_atomically(str(target), "old")
    with pytest.raises(TypeError):
        write_atomically(str(target), 12345)  # not text: fails while writing
    assert target.read_text() == "old" and leftovers(tmp_path) == []
    folder = tmp_path / "existing_dir"
    folder.mkdir()
    with pytest.raises(OSError):  # the rename onto a directory fails (issue 25, item 8)
        write_atomically(str(folder), b"model bytes")
    assert leftovers(tmp_path) == [] and folder.is_dir()


def test_a_killed_writers_temporary_is_removed_by_the_next_writer(tmp_path):
    target = tmp_path / "m.onnx"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"m.onnx{TEMPORARY}{int(gone.stdout)}"
    stale.write_bytes(b"half a model")
    live = tmp_path / f"m.onnx{TEMPORARY}{os.getppid()}"  # a live process's: left alone
    live.write_bytes(b"being written")
    other = tmp_path / f"n.onnx{TEMPORARY}{int(gone.stdout)}"  # another file's: left alone
    other.write_bytes(b"x")
    write_atomically(str(target), b"model")
    assert target.read_bytes() == b"model"
    assert leftovers(tmp_path) == sorted([live.name, other.name])
