"""What users do wrong and what happens to runs, through the command line: each ends in one
``error:`` line and the documented exit code, without a traceback, and a refused command leaves
the workdir byte-for-byte unchanged. Damaged checkpoints fall back to the step before, a second
trainer is turned away, and runs killed or interrupted end bitwise where an uninterrupted run
ends.

Most runs are R: the tiny U-Net on the smoke data for 30 steps, a progress line every step, a
checkpoint every 4, an evaluation every 10, the last 3 checkpoints kept.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from segjax.models.weights import write_safetensors
from tests.cli_utils import (
    ROOT,
    assert_one_error_line,
    assert_same_params,
    cpu_env,
    file_hashes,
    final_params,
    logged_steps,
    losses,
    run,
    start,
    train_command,
    wait_for,
)
from tests.conftest import varied_items, write_folder
from tests.pretrained_reference import seeded_state_dict
from tests.test_pretrained import FIXTURES as PRETRAINED_CASES

pytestmark = pytest.mark.slow

R = [
    "--config.total_steps=30",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=4",
    "--config.eval_every_steps=10",
    "--config.keep_checkpoints=3",
]


def lock_holder(workdir):
    try:
        return json.loads((workdir / "train.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def reference(tfds_dir, shapes_small, tmp_path_factory):
    """R trained to the end in one go, while a second trainer tries the same workdir."""
    workdir = tmp_path_factory.mktemp("reference") / "W"
    first = start(
        train_command(tfds_dir, workdir, *R), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(lambda: lock_holder(workdir) == first.pid, first)
    # Held still while the second tries: on a fast machine with a warm compilation cache the
    # first could otherwise finish its 30 steps before the second has even imported JAX.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        began = time.time()
        second = run(train_command(tfds_dir, workdir, *R))
        second_seconds = time.time() - began
        running_meanwhile = first.poll() is None
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    return types.SimpleNamespace(
        workdir=workdir,
        pid=first.pid,
        stdout=stdout,
        second=second,
        second_seconds=second_seconds,
        running_meanwhile=running_meanwhile,
    )


def copy_of(reference, tmp_path):
    workdir = tmp_path / "W"
    shutil.copytree(reference.workdir, workdir)
    return workdir


@pytest.fixture(scope="module")
def binary_folder(tmp_path_factory):
    """Six images with 0/255 masks and no classes.json: two classes, known only from the masks."""
    rng = np.random.default_rng(0)
    items = {
        f"cell{i}": (
            rng.integers(0, 256, (24, 24, 3), dtype=np.uint8),
            ".png",
            np.where(rng.random((24, 24)) < 0.3, 255, 0).astype(np.uint8),
        )
        for i in range(6)
    }
    return write_folder(tmp_path_factory.mktemp("binary"), items)


def folder(path, *more):
    return ["--config.data.name=folder", f"--config.data.path={path}", *more]


# What failed, row 3: two trainers on one workdir.
def test_a_second_trainer_exits_at_once_and_the_first_finishes(reference):
    assert reference.running_meanwhile  # the second tried while the first trained
    assert_one_error_line(
        reference.second, 2, f"is in use by pid {reference.pid} on ", "train.lock"
    )
    assert reference.second.stdout == ""  # turned away before loading data or a model
    assert reference.second_seconds < 60
    steps = logged_steps(reference.workdir)
    assert len(steps) == len(set(steps)) and max(steps) == 30  # no step logged twice
    assert not (reference.workdir / "train.lock").exists()  # released at the end


# What failed, row 5 (second half): the first progress line's ETA.
def test_progress_lines_say_when_the_eta_is_not_known_yet(reference):
    lines = [line for line in reference.stdout.splitlines() if line.startswith("step ")]
    assert len(lines) == 30
    assert lines[0].startswith("step 1/30") and lines[0].endswith("ETA after the next logged step")
    assert all(re.search(r"ETA \d+m\d\ds$", line) for line in lines[1:])  # minutes, not hours


# What failed, row 1: a rerun with another config.
@pytest.mark.parametrize(
    "overrides,change",
    [
        (["--config.model.encoder=resnet34"], "model.encoder 'resnet18' -> 'resnet34'"),
        (["--config.data.num_classes=4"], "data.num_classes 0 -> 4"),
        (["--config.model.dtype=bfloat16"], "model.dtype 'float32' -> 'bfloat16'"),
        ("folder", "data.name 'segjax_shapes/small' -> 'folder'"),
    ],
)
def test_a_rerun_with_another_config_is_refused(
    reference, tfds_dir, binary_folder, overrides, change
):
    if overrides == "folder":
        overrides = folder(binary_folder, "--config.data.num_classes=2")
    before = file_hashes(reference.workdir)
    result = run(train_command(tfds_dir, reference.workdir, *R, *overrides))
    assert_one_error_line(result, 2, "config.json is the config of another run: ", change)
    assert "--force_config" in result.stderr
    assert file_hashes(reference.workdir) == before


def test_force_config_resumes_a_compatible_change_and_records_it(reference, tfds_dir, tmp_path):
    workdir = copy_of(reference, tmp_path)
    before = file_hashes(workdir)
    other_model = run(
        train_command(tfds_dir, workdir, *R, "--force_config", "--config.model.encoder=resnet34")
    )
    assert_one_error_line(other_model, 2, "checkpoint step 30 in ", "holds another model")
    assert file_hashes(workdir) == before

    longer = run(
        train_command(
            tfds_dir, workdir, *R, "--force_config", "--config.data.num_classes=4",
            "--config.total_steps=32",
        )
    )  # fmt: skip
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "resumed from step 30" in longer.stdout
    assert "config changed on resume (data.num_classes 0 -> 4, total_steps 30 -> 32)" in (
        longer.stdout
    )
    (change,) = map(json.loads, (workdir / "config_changes.jsonl").read_text().splitlines())
    assert change["forced"] and change["resumed_from_step"] == 30
    assert change["changes"] == {"data.num_classes": [0, 4], "total_steps": [30, 32]}
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["num_classes"] == 4 and config["total_steps"] == 32
    assert max(losses(workdir)) == 32


# What failed, row 2: a damaged checkpoint.
def damage(workdir, step, how):
    state = workdir / "checkpoints" / str(step) / "state"
    if how == "truncate":
        for path in (state / "ocdbt.process_0" / "d").iterdir():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "_METADATA":
        (state / "_METADATA").unlink()
    else:
        shutil.rmtree(state.parent / "data")


def evaluate_command(workdir, *flags):
    return [sys.executable, "-m", "segjax.evaluate", "--workdir", str(workdir), *flags]


def test_a_corrupt_latest_checkpoint_falls_back_and_ends_as_if_never_damaged(
    reference, tfds_dir, tmp_path
):
    workdir = copy_of(reference, tmp_path)
    damage(workdir, 30, "truncate")
    evaluated = run(
        evaluate_command(workdir, "--checkpoint=latest", "--split=validation", "--num_images=0")
    )
    assert evaluated.returncode == 0 and "Traceback" not in evaluated.stderr, evaluated.stderr
    assert "checkpoint step 30 in " in evaluated.stdout and "cannot be read" in evaluated.stdout
    assert "step 28 (latest), validation split" in evaluated.stdout

    resumed = run(train_command(tfds_dir, workdir, *R))
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "trying step 28" in resumed.stdout and "resumed from step 28" in resumed.stdout
    assert "moved unreadable checkpoint step 30 to " in resumed.stdout
    (kept,) = (workdir / "unreadable_checkpoints").iterdir()  # set aside, not deleted
    assert kept.name.startswith("30-") and (kept / "state").is_dir()
    assert_same_params(final_params(workdir, 30), final_params(reference.workdir, 30))
    assert losses(workdir) == losses(reference.workdir)
    steps = logged_steps(workdir)
    assert len(steps) == len(set(steps))  # steps 29 and 30 logged again, not twice


@pytest.mark.parametrize("how", ["_METADATA", "data/"])
def test_evaluate_names_an_unreadable_step_and_uses_the_one_before(reference, tmp_path, how):
    workdir = copy_of(reference, tmp_path)
    damage(workdir, 30, how)
    evaluated = run(
        evaluate_command(workdir, "--checkpoint=latest", "--split=validation", "--num_images=0")
    )
    assert evaluated.returncode == 0 and "Traceback" not in evaluated.stderr, evaluated.stderr
    line = next(x for x in evaluated.stdout.splitlines() if x.startswith("checkpoint step 30"))
    assert "cannot be read" in line and line.endswith("trying step 28")
    assert "step 28 (latest)" in evaluated.stdout


def test_no_readable_checkpoint_is_one_error_and_changes_nothing(reference, tfds_dir, tmp_path):
    workdir = copy_of(reference, tmp_path)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    for step in steps:
        damage(workdir, step, "truncate")
    before = file_hashes(workdir)
    result = run(train_command(tfds_dir, workdir, *R))
    assert_one_error_line(result, 1, "no readable checkpoint in ", f"(tried steps {steps[::-1]})")
    assert file_hashes(workdir) == before
    evaluated = run(evaluate_command(workdir, "--split=validation"))
    assert_one_error_line(evaluated, 1, "no readable checkpoint in ")


# What failed, rows 4, 5 and 6: mistakes caught before anything is written.
@pytest.fixture(scope="module")
def odd_folders(tmp_path_factory):
    """Folders without classes.json: masks holding 0, 1 and 3; and one with an empty
    validation split."""
    rng = np.random.default_rng(1)
    image = lambda: rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)  # noqa: E731
    values = {f"img{i}": (image(), ".png", np.full((20, 20), i % 2, np.uint8)) for i in range(5)}
    values["img5"] = (image(), ".png", np.where(np.eye(20) > 0, 3, 0).astype(np.uint8))
    stems = sorted(values)
    return {
        "values": write_folder(tmp_path_factory.mktemp("values"), values),
        "no_validation": write_folder(
            tmp_path_factory.mktemp("splits"),
            values,
            splits={"train": stems[:4], "validation": [], "test": stems[4:]},
            classes={"classes": ["background", "cell", "c2", "c3"]},
        ),
    }


# One command per mechanism of the checks (each key's own case: tests/test_validation.py).
BAD_FLAGS = [
    (["--config.log_every_steps=0"], "log_every_steps=0 is not valid; it must be an integer >= 1"),
    (["--config.best_metric=mIoU"], "best_metric='mIoU' is not a metric this run logs; choose"),
    (["--config.data.image_size=-32,32"], "data.image_size=(-32, 32) is not valid; it must be a"),
    (["--config.batch_size=-4"], "batch_size=-4 is not valid; it must be an integer >= 1"),
    (["--config.eval_split=val"], "eval_split='val' is not valid; it must be one of ['train', '"),
    (["--config.data.channels=2"], "data.channels=2 is not valid; it must be one of [1, 3, 4]"),
    (["--config.model.deep_supervision=True"], "model: unknown option(s) ['deep_supervision']"),
    (  # a tuple given twice: the last value, not (48, 48, -32, 32)
        ["--config.data.image_size=48,48", "--config.data.image_size=-32,32"],
        "data.image_size=(-32, 32) is not valid",
    ),
    ("values", "data.num_classes=2 but "),
    ("phantom", "data.num_classes=3 but no mask in "),
    ("no_validation", "has an empty 'validation' split"),
]


@pytest.mark.parametrize("overrides,message", BAD_FLAGS, ids=lambda x: str(x)[:40])
def test_a_bad_value_is_refused_before_anything_is_written(
    reference, tfds_dir, binary_folder, odd_folders, overrides, message
):
    fragments = [message]
    if overrides == "values":  # a mask holds 3, outside the two classes
        overrides = folder(odd_folders["values"], "--config.data.num_classes=2")
        fragments.append(f"{odd_folders['values']}/masks/img5.png holds mask value 3")
    elif overrides == "phantom":  # binary masks but three classes: one would score 0 IoU
        overrides = folder(binary_folder, "--config.data.num_classes=3")
        fragments.append("holds class 2 (values seen: [0, 1]); set data.num_classes=2")
    elif overrides == "no_validation":
        overrides = folder(odd_folders["no_validation"])
    before = file_hashes(reference.workdir)
    result = run(train_command(tfds_dir, reference.workdir, *R, *overrides))
    assert_one_error_line(result, 2, *fragments)
    assert file_hashes(reference.workdir) == before


def weights_file(tmp_path, case: str) -> tuple[list[str], str]:
    """The overrides of issue 25's cases 2 and 3 (a weights file, or a seed, that cannot work)
    and the fragment its error line must hold."""
    path = tmp_path / f"{case}.safetensors"
    tensors = seeded_state_dict(PRETRAINED_CASES["resnet18"]["keys"])
    if case == "missing":
        return [f"--config.model.pretrained={path}"], "no such file"
    if case == "digest":
        write_safetensors(str(path), tensors, {})
        sha = "--config.model.pretrained_sha256=" + "0" * 64
        return [f"--config.model.pretrained={path}", sha], "the file is not the one"
    if case == "garbage":
        path.write_bytes(b"not a weights file\n" * 8)
        return [f"--config.model.pretrained={path}"], f"{path}: not a readable safetensors file"
    if case == "no_layout":
        write_safetensors(str(path), {"stem.kernel": np.zeros((3, 3), np.float32)}, {})
        return [f"--config.model.pretrained={path}"], "holds no known layout"
    if case == "int32":
        tensors["layer1.0.conv1.weight"] = tensors["layer1.0.conv1.weight"].astype(np.int32)
        write_safetensors(str(path), tensors, {})
        return [f"--config.model.pretrained={path}"], "tensor layer1.0.conv1.weight is int32"
    assert case == "seed"
    return ["--config.seed=99999999999999999999"], "seed=99999999999999999999 is not valid"


@pytest.mark.parametrize("case", ["missing", "digest", "garbage", "no_layout", "int32", "seed"])
def test_a_weights_file_or_seed_that_cannot_work_leaves_the_workdir_as_it_was(
    tfds_dir, tmp_path, case
):
    """Issue 25, cases 2 and 3: refused with exit 2 before the model is built or the workdir
    taken: a new workdir is never created, an existing one (here holding one file of the user's)
    keeps every byte and gains no file or folder."""
    overrides, fragment = weights_file(tmp_path, case)
    result = run(train_command(tfds_dir, tmp_path / "new", *R, *overrides))
    assert_one_error_line(result, 2, fragment)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "W"
    existing.mkdir()
    (existing / "notes.txt").write_text("the user's")
    before = file_hashes(existing)
    result = run(train_command(tfds_dir, existing, *R, *overrides))
    assert_one_error_line(result, 2, fragment)
    assert file_hashes(existing) == before
    assert [p.name for p in existing.rglob("*")] == ["notes.txt"]


def test_convert_refuses_integer_tensors_and_writes_nothing(tmp_path):
    """Issue 25, case 3: weights are floating point; an int32 tensor names itself."""
    overrides, fragment = weights_file(tmp_path, "int32")
    source = overrides[0].split("=", 1)[1]
    out = tmp_path / "out.safetensors"
    result = run(["python", "-m", "segjax.convert", "--from", source, "--arch", "unet",
                  "--encoder", "resnet18", "--num_classes", "2", "--to", str(out)])  # fmt: skip
    assert_one_error_line(result, 2, fragment, "not floating point")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int32.safetensors"]


def test_an_unwritable_workdir_and_a_workdir_without_checkpoints(reference, tfds_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run(train_command(tfds_dir, blocker / "run", *R))
    assert_one_error_line(result, 2, f"--workdir {blocker / 'run'} cannot be created")
    assert blocker.read_text() == "not a directory"

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(reference.workdir / "config.json", empty)
    evaluated = run(evaluate_command(empty))
    assert_one_error_line(evaluated, 1, f"no checkpoint in {empty / 'checkpoints'}")


# SIGTERM (preemption) and SIGINT (Ctrl-C) save at the next step boundary and exit 0; the rerun
# ends as the uninterrupted run.
@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.soak)],  # one mechanism
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_saves_and_the_rerun_continues_exactly(reference, tfds_dir, tmp_path, sig):
    workdir = tmp_path / "W"
    process = start(
        train_command(tfds_dir, workdir, *R), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(lambda: (workdir / "metrics.jsonl").exists() and len(losses(workdir)) >= 5, process)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    saved = int(re.search(rf"{sig.name}: saved step (\d+)", stdout).group(1))
    assert 5 <= saved < 30 and (workdir / "checkpoints" / str(saved)).is_dir()

    resumed = run(train_command(tfds_dir, workdir, *R))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {saved}" in resumed.stdout
    assert_same_params(final_params(workdir, 30), final_params(reference.workdir, 30))
    assert losses(workdir) == losses(reference.workdir)


# What failed, row 6: every loss can be switched on from the command line.
def test_focal_loss_from_the_command_line(tfds_dir, shapes_small, tmp_path):
    workdir = tmp_path / "W"
    result = run(
        train_command(
            tfds_dir, workdir, "--config.total_steps=2", "--config.log_every_steps=1",
            "--config.eval_every_steps=2", "--config.loss.weights.focal=1.0",
            "--config.loss.options.focal.gamma=2", "--config.data.image_size=48,48",
            "--config.data.image_size=32,32",
        )
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    focal = losses(workdir, "train/loss/focal")
    assert sorted(focal) == [1, 2] and all(np.isfinite(v) and v > 0 for v in focal.values())
    config = json.loads((workdir / "config.json").read_text())
    assert config["loss"]["options"]["focal"] == {"gamma": 2.0}
    assert config["data"]["image_size"] == [32, 32]  # the repeated tuple replaced, not joined


def checkpoint_dirs(workdir):
    """(complete steps, temporary directories of saves in progress) under checkpoints/."""
    try:
        names = [p.name for p in (workdir / "checkpoints").iterdir()]
    except FileNotFoundError:
        return [], []
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if "tmp" in n]


# Kill storm: SIGKILL at seeded random moments (start-up, training, checkpoint writes).
@pytest.mark.soak
def test_ten_sigkills_end_bitwise_as_the_uninterrupted_run(reference, tfds_dir, tmp_path):
    workdir = tmp_path / "W"
    rng = np.random.default_rng(10)
    kills = []
    for _ in range(10):
        restored = max(checkpoint_dirs(workdir)[0], default=0)
        kind = rng.choice(["seconds", "steps", "checkpoint write"])
        if kind == "steps" and restored >= 24:
            kind = "checkpoint write"  # leave steps to train after the storm
        process = start(
            train_command(tfds_dir, workdir, *R),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kind == "seconds":  # mostly start-up: imports, data, restore, compile
            deadline = time.time() + rng.uniform(0.5, 7.0)
            wait_for(lambda d=deadline: time.time() > d, process)
        elif kind == "steps":
            target = restored + int(rng.integers(1, 4))
            wait_for(lambda t=target: max(losses_or_none(workdir), default=0) >= t, process)
        else:
            wait_for(lambda: checkpoint_dirs(workdir)[1], process, timeout=300)
        writing = bool(checkpoint_dirs(workdir)[1])
        process.kill()
        process.wait()
        kills.append((str(kind), restored, writing))
    assert any(writing for _, _, writing in kills), kills  # some kills hit a checkpoint write

    final = run(train_command(tfds_dir, workdir, *R))
    assert final.returncode == 0, (kills, final.stderr[-3000:])
    assert_same_params(final_params(workdir, 30), final_params(reference.workdir, 30))
    assert losses(workdir) == losses(reference.workdir)
    steps = logged_steps(workdir)
    assert len(steps) == len(set(steps)), kills


def losses_or_none(workdir):
    """The logged steps so far ({} before the first record)."""
    try:
        return losses(workdir)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# The third reliability probe (issue 52): the sweep runner killed, and one-line errors.
def test_a_sweep_killed_while_a_member_trains_continues_it_exactly(reference, tfds_dir, tmp_path):
    """SIGKILL to the runner and the member it is training (the process group, as a machine
    that dies or the OOM killer's group kill does), then the same command again: the member
    resumes from its last checkpoint and ends bitwise where R ends, and is evaluated."""
    spec = tmp_path / "sweep.py"
    overrides = {o.removeprefix("--config.").split("=")[0]: int(o.split("=")[1]) for o in R}
    overrides.update({"model.encoder": "resnet18", "model.encoder_depth": 3})
    overrides["data.data_dir"] = str(tfds_dir)
    spec.write_text(
        "from segjax.experiments.spec import Experiment, Member\n"
        "def get_experiment():\n"
        f"    return Experiment(name='k', members=[Member('r', 'configs/resnet_unet.py:smoke', "
        f"{overrides!r})])\n"
    )
    command = [sys.executable, "-m", "segjax.experiments.run", str(spec), "--workdir",
               str(tmp_path / "runs"), "--nospeed"]  # fmt: skip
    member = tmp_path / "runs" / "r"
    runner = start(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: max(losses_or_none(member), default=0) >= 9, runner)
    os.killpg(runner.pid, signal.SIGKILL)  # the runner and the trainer it started
    runner.wait()
    assert not json.loads((member / "member.json").read_text()).get("finished")
    again = run(command)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.search(r"resumed from step \d+", again.stdout), again.stdout[-3000:]
    assert json.loads((member / "member.json").read_text())["finished"]
    assert (member / "eval_test.json").exists()
    assert_same_params(final_params(member, 30), final_params(reference.workdir, 30))
    assert losses(member) == losses(reference.workdir)


def test_a_data_error_after_a_progress_bar_is_a_line_of_its_own(tfds_dir, tmp_path):
    """tfds draws progress bars while it prepares a folder dataset and erases them with
    carriage returns, no newline: the error line must still start a line (issue 52, 10)."""
    items = varied_items(6)
    image, suffix, mask = items["img03"]
    items["img03"] = (image, suffix, np.where(mask > 0, 7, 0).astype(np.uint8))
    root = write_folder(tmp_path / "data", items, classes={"classes": ["background", "cell"]})
    fresh = tmp_path / "tfds"  # its own, so the dataset is prepared (and its bars drawn) here
    command = train_command(fresh, tmp_path / "run", *folder(root))
    # As bytes: text mode would turn the bar's carriage returns into newlines.
    result = subprocess.run(command, cwd=ROOT, env=cpu_env(), capture_output=True, timeout=600)
    assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr[-3000:]
    assert b"\r" in result.stderr  # there was a bar to end
    last = result.stderr.rstrip(b"\n").split(b"\n")[-1]
    assert last.startswith(b"error: ") and b"img03.png: mask values [7] are outside 0..1" in last
    assert result.stderr.count(b"error:") == 1


def test_a_misspelt_config_key_names_the_flag_and_the_nearest_key(tfds_dir, tmp_path):
    """Issue 52, 11: no escaped quotes or newlines; the flag and the key that exists."""
    result = run(train_command(tfds_dir, tmp_path / "W", "--config.optimzer.learning_rate=0.1"))
    assert_one_error_line(
        result,
        2,
        "--config.optimzer.learning_rate=0.1: the config has no key 'optimzer'; did you mean "
        "'optimizer'?",
    )
    assert "\\" not in result.stderr.strip().split("\n")[-1]
    assert not (tmp_path / "W").exists()
