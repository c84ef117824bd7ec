"""The workdir contract, in-process: config comparison, the lock, atomic files, metrics cut back
on resume, checkpoint fallback over damaged steps, and the command-line rules."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from configs.resnet_unet import get_config
from segjax import cli
from segjax import workdir as workdir_lib
from segjax.checkpoint import Checkpointer, CheckpointMismatch
from segjax.defaults import base_config
from segjax.errors import CheckpointError, RunError, UserError, WorkdirError


def defaults():
    return workdir_lib.as_json(base_config())


def test_config_differences_name_the_keys_and_allow_resumable_ones(tmp_path):
    config = get_config("smoke")
    workdir_lib.write_config(str(tmp_path), config, {}, 0, False)
    assert workdir_lib.check_config(str(tmp_path), config, defaults(), False)[1] == {}

    longer = get_config("smoke")
    longer.total_steps, longer.data.num_threads = 60, 1
    _, changes = workdir_lib.check_config(str(tmp_path), longer, defaults(), False)
    assert changes == {"data.num_threads": (2, 1), "total_steps": (6, 60)}

    other = get_config("smoke")
    other.model.encoder, other.data.image_size = "resnet34", (48, 48)
    with pytest.raises(WorkdirError) as error:
        workdir_lib.check_config(str(tmp_path), other, defaults(), False)
    message = str(error.value)
    assert "config.json is the config of another run:" in message
    assert "data.image_size [32, 32] -> [48, 48], model.encoder 'resnet18' -> 'resnet34'" in (
        message
    )
    assert "--force_config" in message and "total_steps" in message
    _, forced = workdir_lib.check_config(str(tmp_path), other, defaults(), True)
    assert set(forced) == {"data.image_size", "model.encoder"}


def test_an_older_config_json_reads_with_the_new_keys_at_their_defaults(tmp_path):
    stored = workdir_lib.as_json(get_config("smoke"))
    del stored["loss"]["weights"]["focal"], stored["loss"]["options"]  # written before they were
    (tmp_path / "config.json").write_text(json.dumps(stored))
    _, changes = workdir_lib.check_config(str(tmp_path), get_config("smoke"), defaults(), False)
    assert changes == {}
    config = workdir_lib.as_config(stored, base_config())
    assert config.loss.weights.focal == 0.0 and config.loss.options.focal.gamma == 2.0
    assert config.data.image_size == (32, 32)  # lists read back as tuples


def test_metrics_are_cut_back_to_the_restored_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "train/loss": 1.0 / s}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "train/lo')  # cut short by a kill
    assert workdir_lib.truncate_metrics(str(tmp_path), 2) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert workdir_lib.truncate_metrics(str(tmp_path), 2) == 0
    assert workdir_lib.truncate_metrics(str(tmp_path / "none"), 2) == 0


HOLD = textwrap.dedent(
    """
    import sys, time
    from segjax.workdir import WorkdirLock
    lock = WorkdirLock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_the_lock_names_its_holder_and_is_released_when_the_holder_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = workdir_lib.WorkdirLock(str(tmp_path))
        assert lock.holder()["pid"] == holder.pid
        with pytest.raises(WorkdirError, match=f"is in use by pid {holder.pid} on "):
            lock.refuse_if_held()
        with pytest.raises(WorkdirError, match="lock file .*train.lock"):
            lock.acquire()
    finally:
        holder.kill()
        holder.wait()
    # Killed: the file is still there, but nobody holds it.
    assert (tmp_path / "train.lock").exists()
    lock = workdir_lib.WorkdirLock(str(tmp_path))
    assert lock.holder() is None
    with lock:
        assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "train.lock").exists()  # released on exit


def test_an_unwritable_workdir_is_a_workdir_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WorkdirError, match="cannot be written"):
        workdir_lib.WorkdirLock(str(blocker / "run")).acquire()
    with pytest.raises(WorkdirError, match="exists and is not a directory"):
        workdir_lib.check_path(str(blocker))


def small_state(value):
    weights = np.random.default_rng(value).normal(size=(64, 64))  # incompressible on disk
    return {"params": {"w": jnp.asarray(weights, jnp.float32)}, "step": jnp.int32(value)}


@pytest.mark.parametrize("damage", ["truncate data files", "remove the manifest", "remove data/"])
def test_an_unreadable_step_falls_back_to_the_one_before(tmp_path, damage):
    directory = tmp_path / "checkpoints"
    with Checkpointer(str(directory), keep=3, best_metric="miou") as checkpointer:
        for step in (2, 4):
            checkpointer.save(step, small_state(step), {"position": step}, {"miou": step / 10})
    state_dir = directory / "4" / "state"
    if damage == "truncate data files":
        for path in (state_dir / "ocdbt.process_0" / "d").iterdir():
            os.truncate(path, path.stat().st_size // 2)
    elif damage == "remove the manifest":
        (state_dir / "manifest.ocdbt").unlink()
    else:
        import shutil

        shutil.rmtree(directory / "4" / "data")
    said = []
    with Checkpointer(str(directory), keep=3, best_metric="miou", read_only=True) as reader:
        assert reader.candidates("best") == [4, 2] and reader.candidates("latest") == [4, 2]
        step, state, data, unreadable = reader.restore_readable(
            reader.candidates("latest"), small_state(0), said.append
        )
    assert (step, data, unreadable) == (2, {"position": 2}, [4])
    np.testing.assert_array_equal(state["params"]["w"], small_state(2)["params"]["w"])
    assert len(said) == 1 and said[0].startswith("checkpoint step 4 in ")
    assert "cannot be read" in said[0] and said[0].endswith("trying step 2")

    with Checkpointer(str(directory), keep=3, best_metric="miou") as writer:
        moved = writer.set_aside(4, str(tmp_path / "unreadable"))
        assert writer.steps() == [2] and os.path.isdir(moved)
        writer.save(4, small_state(4), {"position": 4})  # the step can be saved again
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*\(tried steps \[2\]\)"):
        os.remove(directory / "2" / "state" / "manifest.ocdbt")
        with Checkpointer(str(directory), read_only=True) as reader:
            reader.restore_readable([2], small_state(0), said.append)


def test_a_checkpoint_of_another_model_is_a_mismatch_not_a_fallback(tmp_path):
    with Checkpointer(str(tmp_path)) as checkpointer:
        checkpointer.save(1, small_state(1), {})
    other = {"params": {"w": jnp.zeros((4, 2))}, "step": jnp.int32(0)}  # 64x64 saved
    with Checkpointer(str(tmp_path), read_only=True) as reader:
        with pytest.raises(CheckpointMismatch, match=r"other shape: \['params/w'\]"):
            reader.restore_readable([1], other, print)
        with pytest.raises(UserError, match="--checkpoint=7: choose best, latest or one of"):
            reader.candidates("7")


def test_repeated_overrides_keep_the_last_value():
    argv = [
        "prog",
        "--config.data.image_size=64,64",
        "--config",
        "c.py",
        "--config.data.image_size",
        "32,32",
        "--config.seed=1",
        "--noconfig.model.deep_supervision",
        "--config.model.deep_supervision",
    ]
    assert cli.last_override_wins(argv) == [
        "prog",
        "--config",
        "c.py",
        "--config.data.image_size",
        "32,32",
        "--config.seed=1",
        "--config.model.deep_supervision",
    ]


def test_one_exit_code_rule():
    def raising(error):
        def main(argv):
            raise error

        return main

    assert cli.guarded(lambda argv: 0, ["prog"]) == 0
    assert cli.guarded(raising(UserError("bad")), ["prog"]) == 2
    assert cli.guarded(raising(RunError("failed")), ["prog"]) == 1
    assert cli.guarded(raising(KeyboardInterrupt()), ["prog"]) == 130
    assert cli.guarded(raising(OSError(28, "No space left on device")), ["prog"]) == 1
    assert cli.guarded(raising(ZeroDivisionError("a bug")), ["prog"]) == 1
    with pytest.raises(UserError, match="expected EXPERIMENT, got none"):
        cli.positional(["prog"], ("experiment",))
