"""The speed measurements: they run the real step, time what they say, and the CLI prints its
table (without torch, saying that the smp baseline was not run)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from segjax import benchmark
from tests.cli_utils import FAST_COMPILE

ROOT = pathlib.Path(__file__).parents[1]


def run_cli(module: str, tfds_dir, *flags: str) -> subprocess.CompletedProcess:
    """``python -m module`` on the smoke config and the test dataset, on CPU, output captured."""
    command = [
        sys.executable,
        "-m",
        module,
        "--config",
        "configs/resnet_unet.py:smoke",
        f"--config.data.data_dir={tfds_dir}",
        *flags,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


def test_time_calls_times_the_calls_after_warmup():
    calls = []
    result = benchmark.time_calls(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and len(result["ms"]) == 3
    assert result["median_ms"] == sorted(result["ms"])[1]
    with pytest.raises(ValueError, match="repeats=0"):
        benchmark.time_calls(lambda: None, warmup=1, repeats=0)


def test_interleaved_calls_alternate_and_their_ratio_is_paired():
    """Each round runs every call once, the order reversed every other round; the ratio is the
    median of the rounds' quotients, so a machine slowing down midway leaves it unchanged."""
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    result = benchmark.time_interleaved(calls, warmup=1, repeats=3)
    assert "".join(order) == "abbaabba"
    assert len(result["a"]["ms"]) == len(result["b"]["ms"]) == 3
    quick = benchmark.time_interleaved(calls, warmup=1, repeats=2, min_seconds=1e-9, max_repeats=4)
    assert quick["a"]["repeats"] == 2  # the two rounds took longer than min_seconds
    slow = benchmark.time_interleaved(
        {"sleep": lambda: __import__("time").sleep(0.01)}, 1, 2, min_seconds=0.05, max_repeats=9
    )
    assert 5 <= slow["sleep"]["repeats"] <= 6  # rounds went on until 50 ms were timed
    slow_then_fast = {"ms": [300.0, 310.0, 100.0]}  # the machine sped up after two rounds
    twice_as_slow = {"ms": [600.0, 620.0, 200.0]}
    assert benchmark.paired_ratio(twice_as_slow, slow_then_fast) == 2.0


def test_rounds_go_on_until_enough_or_the_time_limit():
    calls = {"a": lambda: None, "b": lambda: None}
    seen = []

    def enough(ms):
        seen.append(len(ms["a"]))
        return len(ms["b"]) >= 7

    result = benchmark.time_interleaved(calls, 1, 2, max_repeats=100, enough=enough)
    assert result["a"]["repeats"] == result["b"]["repeats"] == 7 and seen == [2, 3, 4, 5, 6, 7]
    never = benchmark.time_interleaved(
        {"sleep": lambda: __import__("time").sleep(0.01)}, 1, 2, enough=lambda ms: False,
        max_seconds=0.05,
    )  # fmt: skip
    assert 5 <= never["sleep"]["repeats"] <= 6  # stopped once 50 ms were timed


def test_median_interval_brackets_the_median_by_rank():
    values = [float(v) for v in range(1, 101)]
    low, high = benchmark.median_interval(values[::-1])  # order does not matter
    assert (low, high) == (40.0, 61.0)  # ranks 40 and 61 of 100: the binomial's 95%
    assert benchmark.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few: the whole range
    assert benchmark.paired_quotients([2.0, 9.0], [1.0, 3.0]) == [2.0, 3.0]


def test_rows_from_several_processes_pool_their_rounds():
    from benchmarks.speed import pooled_row

    def series(ms):
        return {"ms": ms, "median_ms": 0.0, "batch_size": 2, "compile_s": 1.0}

    def row(ours, theirs):
        return {
            "model": "unet/x",
            "train": series(ours),
            "inference": {1: series(ours)},
            "smp": {"train": series(theirs), "inference": {1: series(theirs)}},
            "ratio": {"train": theirs[0] / ours[0], "inference": {1: theirs[0] / ours[0]}},
        }

    pooled = pooled_row([row([10.0, 10.0], [11.0, 11.0]), row([20.0, 20.0, 20.0], [26.0] * 3)])
    assert pooled["processes"] == 2 and pooled["train"]["ms"] == [10.0] * 2 + [20.0] * 3
    assert pooled["train"]["median_ms"] == 20.0 and pooled["train"]["images_per_s"] == 100.0
    assert pooled["smp"]["inference"][1]["ms"] == [11.0] * 2 + [26.0] * 3
    assert pooled["ratio"]["train"] == pytest.approx(1.3)  # median of 1.1, 1.1, 1.3, 1.3, 1.3
    assert pooled["ratio_by_process"]["inference"][1] == [pytest.approx(1.1), pytest.approx(1.3)]
    assert pooled["ratio_interval"]["train"] == [pytest.approx(1.1), pytest.approx(1.3)]


def test_the_speed_ratio_is_precise_when_its_interval_is_narrow():
    from benchmarks.speed import precise

    tight = [1.0 + 0.001 * (i % 5) for i in range(50)]
    loose = [1.0 + 0.2 * (i % 5) for i in range(50)]
    assert precise(tight, 0.03) and not precise(loose, 0.03)
    assert not precise(tight[:5], 0.03)  # five rounds never suffice


@pytest.mark.slow
def test_speed_cli_measures_training_and_inference(tfds_dir, shapes_small, tmp_path):
    out = tmp_path / "speed.json"
    result = run_cli(
        "benchmarks.speed",
        tfds_dir,
        "--config.model.encoder_depth=3",
        "--models=unet:resnet18",
        "--warmup=1",
        "--repeats=2",
        "--inference_size=32",
        "--inference_batches=1,2",
        "--nosmp",
        "--processes=2",
        f"--json={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| unet/resnet18 |" in result.stdout and "smp not run: --nosmp" in result.stdout
    row = json.loads(out.read_text())["rows"][0]
    assert row["processes"] == 2 and "process 2/2 done" in result.stdout
    assert len(row["train"]["ms"]) == 4  # two calls in each process, pooled
    assert len(row["inference"]["1"]["ms"]) == 4
    assert len(row["train_pipeline"]["ms"]) == 2  # timed in the first process only
    first, second = row["train_compile_s_by_process"]
    assert second < first / 2  # the second process loaded the first's compiled step
    for key in ("train", "train_pipeline"):
        assert row[key]["median_ms"] > 0
        assert row[key]["images_per_s"] == pytest.approx(4 / (row[key]["median_ms"] / 1000))
        assert row[key]["memory"]["total_bytes"] > 0 and row[key]["compile_s"] > 0
    assert row["train_pipeline"]["input"] == "pipeline"
    assert set(row["inference"]) == {"1", "2"}
    assert row["inference"]["2"]["image_size"] == [32, 32]
    # Measured in a fresh process (--isolate, the default with --models): its row came back.
    assert "measuring unet/resnet18 ..." in result.stdout


@pytest.mark.slow
def test_profile_step_lists_the_train_steps_op_kinds(tfds_dir, shapes_small):
    result = run_cli(
        "benchmarks.profile_step", tfds_dir, "--config.model.encoder_depth=3", "--steps=1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "segjax unet/resnet18:" in result.stdout and "ms of ops per step" in result.stdout
    assert "fusion" in result.stdout  # XLA op kinds, e.g. ynn_fusion, transpose_copy_fusion
    assert "smp unet/resnet18" in result.stdout  # measured, or "not run" and why


@pytest.mark.parametrize("module", ["benchmarks.speed", "benchmarks.profile_step"])
def test_benchmark_clis_name_a_bad_model_in_one_line(module, tfds_dir, shapes_small):
    result = run_cli(module, tfds_dir, "--models=unet:resnet1000")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: model.encoder='resnet1000' is not valid for arch 'unet'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parity
def test_deploy_benchmark_times_every_exported_runtime(tmp_path):
    import importlib.util

    if importlib.util.find_spec("jax2onnx") is None:
        pytest.skip("the deploy extra is not installed: pip install -e '.[deploy]'")
    out = tmp_path / "deploy.json"
    command = [sys.executable, "-m", "benchmarks.deploy", "--models", "unet:ghostnet_050",
               "--size", "64", "--batches", "1,2", "--warmup", "1", "--repeats", "2",
               "--calibration", "2", "--nosmp", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["runtimes"]) == {"jax", "ort_fp32", "ort_int8"}
    for timings in row["runtimes"].values():
        assert set(timings) == {"1", "2"} and all(len(t["ms"]) == 2 for t in timings.values())
    assert row["ort_fp32_max_abs_diff"] < 1e-3  # the ONNX file computes the JAX model
    files = row["files"]
    assert files["onnx_int8"] < 0.4 * files["onnx_fp32"] and files["stablehlo"] > 0
    assert row["smp_skipped"] == "--nosmp"
    assert "| unet:ghostnet_050 |" in result.stdout and "file sizes (MB)" in result.stdout


@pytest.mark.parity
def test_deploy_benchmark_measures_trained_runs(tfds_dir, shapes_small, tmp_path):
    """--workdirs NAME=DIR: a trained run's best checkpoint, with its own class count."""
    from tests.cli_utils import run, train_command

    workdir = tmp_path / "run"
    trained = run(train_command(tfds_dir, workdir))
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "deploy.json"
    command = ["python", "-m", "benchmarks.deploy", f"--workdirs=tiny={workdir}", "--size", "64",
               "--batches", "1", "--warmup", "1", "--repeats", "1", "--calibration", "1",
               "--nosmp", "--json", str(out)]  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "tiny" and row["ort_fp32_max_abs_diff"] < 1e-3
    bad = run(["python", "-m", "benchmarks.deploy", f"--workdirs={workdir}"])
    assert bad.returncode == 2 and "expected NAME=DIR" in bad.stderr


def test_deploy_builds_a_run_model_from_its_records_alone(tmp_path):
    """--configs NAME=DIR: config.json and dataset.json, no checkpoint, random weights; the
    run's own classes and channels."""
    import jax
    import numpy as np

    from benchmarks.deploy import model_of_records
    from segjax.defaults import base_config
    from segjax.errors import UserError
    from segjax.workdir import DatasetRecord, write_config, write_dataset_record

    config = base_config()
    config.model.encoder = "ghostnet_050"
    write_config(str(tmp_path), config, {}, 0, False)
    write_dataset_record(str(tmp_path), DatasetRecord("cells", ("bg", "a", "b"), 1))
    restored = model_of_records(str(tmp_path))
    assert restored.class_names == ("bg", "a", "b") and restored.channels == 1
    logits = jax.eval_shape(
        lambda x: restored.model.apply(restored.variables, x, train=False),
        np.zeros((1, 64, 64, 1), np.float32),
    )
    assert logits.shape == (1, 64, 64, 3)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(UserError, match="dataset.json not found"):
        model_of_records(str(tmp_path))


def test_conv_paths_times_both_paths_of_a_depthwise_and_a_1x1_conv():
    from benchmarks.conv_paths import measure

    for kernel_size, out_channels in ((3, None), (1, 6)):
        row = measure((2, 9, 7, 4), kernel_size, 2, out_channels, repeats=1)
        for path in ("lax", "fused"):
            assert row[f"{path}_forward_ms"] > 0 and row[f"{path}_backward_ms"] > 0
        assert row["relative_difference"] < 1e-5
