"""Issue 25, case 4, through the command: a disk that fills up while a run checkpoints ends in
one error line naming the step, the partial step removed and the earlier ones intact, and the run
resumed on a larger disk ends exactly as an uninterrupted one. A real size-limited tmpfs where
``mount`` is allowed; elsewhere a patched writer raises ENOSPC from the same step on."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.cli_utils import assert_same_params, final_params, run

pytestmark = pytest.mark.slow

# The tiny paper U-Net, a checkpoint every step (about 5 MB each), none removed: a 14 MB disk
# holds two.
RUN = [
    "--config",
    "configs/resnet_unet.py:smoke",
    "--config.model.arch=unet_paper",
    "--config.model.encoder=",
    "--config.model.filters=8,16,32,64,128",
    "--config.checkpoint_every_steps=1",
    "--config.keep_checkpoints=100",
]
# Without mount: writes of step 4 and later fail as a full disk does (orbax's OSError).
PATCHED = """
import errno, runpy, sys
import orbax.checkpoint as ocp
save = ocp.CheckpointManager.save
def full_from_step_4(self, step, *args, **kwargs):
    if step >= 4:
        raise OSError(errno.ENOSPC, "No space left on device")
    return save(self, step, *args, **kwargs)
ocp.CheckpointManager.save = full_from_step_4
sys.argv = ["segjax.train", *sys.argv[1:]]
runpy.run_module("segjax.train", run_name="__main__")
"""


def train_command(tfds_dir, workdir):
    return [sys.executable, "-m", "segjax.train", *RUN, f"--config.data.data_dir={tfds_dir}",
            "--workdir", str(workdir)]  # fmt: skip


def small_disk(path, megabytes):
    os.makedirs(path)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}M", "tmpfs", str(path)],
        capture_output=True,
    )
    return mounted.returncode == 0


def test_a_full_disk_is_one_error_and_the_run_resumes_exactly_elsewhere(tfds_dir, tmp_path):
    small = tmp_path / "small"
    mounted = small_disk(small, 14)
    try:
        command = train_command(tfds_dir, small / "run")
        if not mounted:
            command = [sys.executable, "-c", PATCHED, *command[3:]]
        full = run(command)
        assert full.returncode == 1, full.stderr[-3000:]
        last = full.stderr.strip().splitlines()[-1]
        assert last.startswith("error: no space left writing checkpoint "), last
        assert "Traceback" not in full.stderr
        failed = int(last.split("checkpoint ")[1].split()[0])
        checkpoints = small / "run" / "checkpoints"
        names = sorted(os.listdir(checkpoints))
        assert not [n for n in names if "tmp" in n], names  # the partial step is gone
        written = sorted(int(n) for n in names)
        assert written == list(range(1, failed)) and written, names  # the earlier ones, intact
        resumed = tmp_path / "big"
        shutil.copytree(small / "run", resumed)
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=False)
    again = run(train_command(tfds_dir, resumed))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from step {failed - 1}" in again.stdout
    reference = run(train_command(tfds_dir, tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    last_step = max(int(n) for n in os.listdir(tmp_path / "reference" / "checkpoints"))
    assert_same_params(
        final_params(resumed, last_step), final_params(tmp_path / "reference", last_step)
    )
