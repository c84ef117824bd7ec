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
