"""End-to-end training through the command line, on the tiny synthetic dataset: sharding over 8
devices and 2 processes, non-finite losses, evaluation, clear errors. Determinism, exact resume
after kills and signals, and workdir failures are in test_failures.py."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from segjax import metrics as metrics_lib
from segjax.data.shapes import CLASS_NAMES
from tests.cli_utils import (
    FAST_COMPILE,
    ROOT,
    assert_same_params,
    final_params,
    losses,
    run,
    train_command,
)

pytestmark = pytest.mark.slow


SHARDED = [
    # Plain SGD without clipping: the update is linear in the gradient, so a gradient summed
    # instead of averaged over devices would show (Adam and clipping would normalise it away).
    "--config.optimizer.name=sgd",
    "--config.optimizer.learning_rate=0.01",
    "--config.optimizer.grad_clip_norm=0",
    "--config.batch_size=8",
    "--config.total_steps=2",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=2",
    "--config.checkpoint_every_steps=2",
]


def test_eight_devices_and_two_processes_match_one_device(tfds_dir, shapes_small, tmp_path):
    """The same global batches on 1 device, 8 simulated devices, and 2 processes x 2 devices
    (jax.distributed on 127.0.0.1): the same losses, eval metrics and parameters, to float
    tolerance (reductions run in a different order)."""
    one = run(train_command(tfds_dir, tmp_path / "one", *SHARDED), devices=1)
    assert one.returncode == 0, one.stderr[-3000:]
    eight = run(train_command(tfds_dir, tmp_path / "eight", *SHARDED), devices=8)
    assert eight.returncode == 0, eight.stderr[-3000:]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
        "JAX_PLATFORMS": "cpu",
    }
    processes = [
        subprocess.Popen(
            train_command(
                tfds_dir,
                tmp_path / "two",
                *SHARDED,
                f"--coordinator=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=400) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][1][-3000:]

    params = final_params(tmp_path / "one", 2)
    # The gradient norm: a sum instead of a mean over devices would be 8x (SGD passes it on).
    # At step 1 it differs by ~0.1% between summation orders (BatchNorm bias gradients);
    # a few argmax ties flip in the eval.
    for key, rtol in (("train/loss", 1e-4), ("train/grad_norm", 1e-2), ("eval/miou", 1e-2)):
        reference = losses(tmp_path / "one", key)
        for name in ("eight", "two"):
            other = losses(tmp_path / name, key)
            assert other.keys() == reference.keys(), key
            np.testing.assert_allclose(
                [other[k] for k in sorted(other)],
                [reference[k] for k in sorted(reference)],
                rtol=rtol,
                err_msg=f"{name}: {key}",
            )
    for name in ("eight", "two"):
        # Gradients differ by ~0.1% between summation orders (Flax BatchNorm's fast variance,
        # E[x^2] - E[x]^2, cancels): updates of ~1e-2 move by ~1e-5.
        assert_same_params(final_params(tmp_path / name, 2), params, rtol=1e-3, atol=5e-5)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--config.optimizer.lr=0.1"], "optimizer.lr"),
        (["--config.model.encoder=resnet1000"], "encoder='resnet1000' is not valid"),
        (["--config.optimizer.name=adam"], "optimizer.name='adam'"),
        (
            ["--config.data.name=folder", "--config.data.path=/no/such/dir"],
            "data.path='/no/such/dir': no such directory",
        ),
    ],
)
def test_bad_config_is_a_clear_error(tfds_dir, tmp_path, overrides, message):
    result = run(train_command(tfds_dir, tmp_path / "run", *overrides))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "source,message",
    [
        ("def get_config(arg=None)\n    return None\n", "line 1: SyntaxError: expected ':'"),
        (
            "def get_config(arg=None):\n    return no_such_name\n",
            "line 2: NameError: name 'no_such_name' is not defined",
        ),
        ("import no_such_module\n", "line 1: ModuleNotFoundError: No module named"),
    ],
)
def test_a_config_file_that_does_not_load_is_one_error_line(tmp_path, source, message):
    """Issue 25: the file's own error and line, exit 2, and the workdir never created."""
    config = tmp_path / "x.py"
    config.write_text(source)
    result = run(["python", "-m", "segjax.train", "--config", str(config), "--workdir",
                  str(tmp_path / "run")])  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --config {config}: {message}")
    assert not (tmp_path / "run").exists()


def test_evaluate_calls_a_never_evaluated_checkpoint_latest_not_best(tfds_dir, tmp_path):
    """Issue 25: a run with no evaluated checkpoint left (killed before its first evaluation;
    here its evaluated last step removed) is scored at its latest step, labelled so."""
    import shutil

    workdir = tmp_path / "run"
    steps = ["--config.total_steps=2", "--config.eval_every_steps=100",
             "--config.checkpoint_every_steps=1"]  # fmt: skip
    assert run(train_command(tfds_dir, workdir, *steps)).returncode == 0
    shutil.rmtree(workdir / "checkpoints" / "2")  # the one evaluated step
    evaluated = run([sys.executable, "-m", "segjax.evaluate", "--workdir", str(workdir),
                     "--num_images", "0"])  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((workdir / "eval_test.json").read_text())
    assert report["step"] == 1 and report["checkpoint"] == "latest"
    assert "holds no evaluated checkpoint to call best" in evaluated.stdout


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tfds_dir, shapes_small, tmp_path):
    workdir = tmp_path / "run"
    result = run(
        train_command(
            tfds_dir,
            workdir,
            "--config.total_steps=40",
            "--config.log_every_steps=1",
            "--config.checkpoint_every_steps=1",
            "--config.eval_every_steps=100",
            "--config.optimizer.learning_rate=1e12",
            "--config.optimizer.grad_clip_norm=0",
            "--config.optimizer.warmup_steps=0",
            "--config.optimizer.schedule=constant",
        )
    )
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: non-finite loss at step") and "Traceback" not in result.stderr
    bad_step = int(error.split("at step ")[1].split()[0])
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and max(saved) < bad_step
    params = final_params(workdir, max(saved))
    assert all(np.isfinite(v).all() for v in params.values())


def test_evaluate_restores_the_best_checkpoint_and_writes_results(tfds_dir, shapes_small, tmp_path):
    workdir = tmp_path / "run"
    trained = run(train_command(tfds_dir, workdir))  # smoke: 6 steps, eval at 3 and 6
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run(
        [
            sys.executable,
            "-m",
            "segjax.evaluate",
            "--workdir",
            str(workdir),
            "--split",
            "test",
            "--num_images",
            "3",
        ]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((workdir / "eval_test.json").read_text())
    assert report["examples"] == 23 and report["split"] == "test"
    evals = {
        json.loads(line)["step"]: json.loads(line).get("eval/miou")
        for line in open(workdir / "metrics.jsonl")
        if "eval/miou" in line
    }
    assert report["step"] == max(evals, key=evals.get)  # the best by validation mIoU
    assert 0.0 <= report["miou"] <= 1.0 and "iou/triangle" in report
    # Averaged over the 23 test images as well as pooled over their pixels.
    assert report["images"] == 23 and 0.0 <= report["image_miou"] <= 1.0
    assert "image_dice/triangle" in report
    # One confusion matrix per test image, in the split's order, that pools to the reported
    # figures (what paired tests over images are computed from).
    records = report["per_image"]
    assert [r["index"] for r in records] == list(range(23))
    pooled = np.sum([r["confusion"] for r in records], axis=0)
    assert metrics_lib.summarize(pooled, list(CLASS_NAMES))["miou"] == pytest.approx(report["miou"])
    assert "triangle" in evaluated.stdout and "mean over images" in evaluated.stdout
    pictures = sorted((workdir / "predictions_test").glob("*.png"))
    assert len(pictures) == 3
    # per_image.csv: one row per image, worst mean IoU first, each class's IoU and Dice as the
    # image's confusion matrix gives them (issue 53).
    with open(workdir / "per_image.csv") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 23 and "per_image.csv" in evaluated.stdout
    means = [float(row["mean_iou"]) for row in table]
    assert means == sorted(means)
    worst = next(r for r in records if r["name"] == table[0]["name"])
    confusion = np.asarray(worst["confusion"], float)
    tp = confusion[3, 3]
    expected = tp / (confusion[3].sum() + confusion[:, 3].sum() - tp)
    assert float(table[0]["iou/triangle"] or "nan") == pytest.approx(expected, 1e-4, nan_ok=True)
    height, width = shapes_small.split("test")[worst["index"]]["mask"].shape
    assert table[0]["size"] == f"{height}x{width}"

    missing = run([sys.executable, "-m", "segjax.evaluate", "--workdir", str(tmp_path / "none")])
    assert missing.returncode == 2 and "config.json: not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_logged_loss_is_the_mean_over_the_logging_window(tfds_dir, tmp_path):
    """Issue 53: the same 6 steps logged every step and every 3 steps: the second's train/loss
    (and every train metric) at steps 3 and 6 is the mean of the first's over steps 1-3, 4-6."""
    logged = {}
    for every in (1, 3):
        workdir = tmp_path / f"every{every}"
        result = run(train_command(tfds_dir, workdir, f"--config.log_every_steps={every}"))
        assert result.returncode == 0, result.stderr[-3000:]
        logged[every] = {
            r["step"]: r
            for r in map(json.loads, open(workdir / "metrics.jsonl"))
            if "train/loss" in r
        }
    assert sorted(logged[3]) == [3, 6]
    for step, steps in ((3, (1, 2, 3)), (6, (4, 5, 6))):
        for key in ("train/loss", "train/grad_norm"):
            mean = np.mean([logged[1][s][key] for s in steps])
            assert logged[3][step][key] == pytest.approx(mean, rel=1e-6), (step, key)
    assert f"loss {logged[3][6]['train/loss']:.4f}" in result.stdout  # the progress line too
