"""A full disk while a checkpoint is written: one error naming the step and the directory, the
partial step removed, the earlier steps untouched (issue 25)."""

import errno
import os

import numpy as np
import pytest

from segjax.checkpoint import Checkpointer
from segjax.errors import CheckpointError


@pytest.mark.parametrize(
    "failure",
    [
        ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_a_full_disk_is_a_checkpoint_error_and_the_partial_step_goes(tmp_path, failure):
    directory = tmp_path / "checkpoints"
    with Checkpointer(str(directory), keep=3, best_metric=None, asynchronous=False) as ckpt:
        ckpt.save(5, {"w": np.ones(3, np.float32)}, {"epoch": 0})
        ckpt.wait()

        def full(*args, **kwargs):
            os.makedirs(directory / "6.orbax-checkpoint-tmp-1234", exist_ok=True)
            raise failure

        ckpt.manager.save = full
        with pytest.raises(CheckpointError) as error:
            ckpt.save(6, {"w": np.zeros(3, np.float32)}, {"epoch": 1})
        assert str(error.value).startswith(f"no space left writing checkpoint 6 in {directory}")
        assert sorted(os.listdir(directory)) == ["5"] and ckpt.steps() == [5]
        ckpt.manager.save = lambda *a, **k: (_ for _ in ()).throw(KeyError("other"))
        with pytest.raises(KeyError):  # anything else is not a full disk
            ckpt.save(7, {"w": np.zeros(3, np.float32)}, {"epoch": 2})


def test_a_background_write_that_fills_the_disk_is_named_by_its_own_step(tmp_path):
    """An asynchronous save fails after ``save`` returned; the next save finds it and names the
    step that failed (on a real 3 MB tmpfs: step 3's write, found at step 6's save), not its own."""
    directory = tmp_path / "checkpoints"
    with Checkpointer(str(directory), keep=3, best_metric=None) as ckpt:
        ckpt.save(3, {"w": np.ones(3, np.float32)}, {"epoch": 0})
        ckpt.wait()  # step 3 written; now pretend step 3 is still being written and failing

        def full():
            raise ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left on device")

        finished, ckpt.manager.wait_until_finished = ckpt.manager.wait_until_finished, full
        with pytest.raises(CheckpointError) as error:
            ckpt.save(6, {"w": np.zeros(3, np.float32)}, {"epoch": 1})
        assert str(error.value).startswith(f"no space left writing checkpoint 3 in {directory}")
        ckpt.manager.wait_until_finished = finished
