"""Issue 50's accelerator measurements, run here on the CPU at a tiny size: the GPU benchmark's
code paths (segjax float32/bfloat16, smp eager/AMP/torch.compile as PyTorch allows them on a
CPU), the input pipeline's rate by workers, a sweep packed N members at a time, and the one
script that runs them all on a lent machine."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.cli_utils import cpu_env, run, train_command

ROOT = pathlib.Path(__file__).parents[1]
pytestmark = pytest.mark.slow
HAS_SMP = all(
    __import__("importlib").util.find_spec(name)
    for name in ("torch", "segmentation_models_pytorch")
)


def gpu_speed(tmp_path, impls: str, *flags: str):
    out = tmp_path / "gpu_speed.json"
    command = ["python", "-m", "benchmarks.gpu_speed", "--models=unet:resnet18", f"--impls={impls}",
               "--size=32", "--train_batches=2", "--infer_batches=1", "--warmup=1",
               "--repeats=2", "--steps=2", f"--json={out}", *flags]  # fmt: skip
    return run(command), out


def test_gpu_benchmark_times_segjax_and_smp_in_every_mode_on_the_cpu(tmp_path):
    impls = "segjax_fp32,segjax_bf16,segjax_fp32_fused" + (",smp_eager,smp_amp" if HAS_SMP else "")
    result, out = gpu_speed(tmp_path, impls, "--peak_tflops=1.0")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {(r["impl"], r["kind"]): r for r in data["rows"]}
    for impl in impls.split(","):
        for kind in ("train", "infer"):
            row = rows[(impl, kind)]
            assert row["images_per_s"] > 0 and row["step_ms"] > 0, row
            assert row["steps_per_call"] == 2 and len(row["ms"]) == 2
            assert row["mfu"] == pytest.approx(row["flops_per_image"] * row["images_per_s"] / 1e12)
    segjax = rows[("segjax_fp32", "train")]
    assert segjax["memory_bytes"] > 0 and segjax["compile_s"] > 0
    # A training image costs three forward passes, by segjax's count and by PyTorch's.
    assert segjax["flops_per_image"] == 3 * rows[("segjax_fp32", "infer")]["flops_per_image"]
    assert "| unet:resnet18 | train | 2 | segjax_bf16 |" in result.stdout
    if HAS_SMP:
        smp = rows[("smp_eager", "infer")]
        # The same network (ResNet-18 U-Net): FLOPs agree between the two counts within 2%.
        assert smp["flops_per_image"] == pytest.approx(
            rows[("segjax_fp32", "infer")]["flops_per_image"], rel=0.02
        )
        kinds = {(r["segjax"], r["smp"], r["kind"]) for r in data["ratios"]}
        assert ("segjax_bf16", "smp_amp", "train") in kinds
        assert ("segjax_fp32", "smp_eager", "infer") in kinds
        assert "segjax / smp images/s" in result.stdout


@pytest.mark.skipif(not HAS_SMP, reason="the bench extra is not installed")
def test_gpu_benchmark_runs_torch_compile_and_keeps_rows_past_its_deadline(tmp_path):
    result, out = gpu_speed(tmp_path, "smp_compile,segjax_fp32", "--deadline_s=600")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = {(r["impl"], r.get("kind")): r for r in json.loads(out.read_text())["rows"]}
    compiled = rows[("smp_compile", "train")]
    assert compiled["images_per_s"] > 0 and compiled["compile_s"] > 0
    assert rows[("segjax_fp32", "train")]["images_per_s"] > 0
    # A deadline already past: nothing more starts, and the command says why.
    late, _ = gpu_speed(tmp_path, "segjax_fp32", "--deadline_s=0.001")
    assert late.returncode == 1 and "nothing was measured" in late.stderr
    assert "--deadline_s" in late.stdout


def test_pipeline_benchmark_measures_host_and_device_augmentation(tfds_dir, shapes_small, tmp_path):
    out = tmp_path / "pipeline.json"
    command = ["python", "-m", "benchmarks.pipeline_speed", "--config",
               "configs/resnet_unet.py:small", f"--config.data.data_dir={tfds_dir}",
               "--threads=1,2", "--workers=0,1", "--batch=4", "--seconds=0.5", "--cache=false",
               f"--json={out}"]  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    combos = {(r["where"], r["threads"], r["workers"]) for r in data["rows"]}
    assert combos == {(w, t, p) for w in ("host", "device") for t in (1, 2) for p in (0, 1)}
    assert all(r["images_per_s"] > 0 and r["batches"] >= 3 for r in data["rows"])
    assert data["device_warp"]["images_per_s"] > 0
    assert "| device | no | 2 | 1 |" in result.stdout


def test_parallel_runner_packs_members_and_times_them_alone_afterwards(
    tfds_dir, shapes_small, tmp_path
):
    experiment = tmp_path / "two.py"
    experiment.write_text(
        "from segjax.experiments.spec import Experiment, Member\n"
        "def get_experiment():\n"
        "    common = {'model.encoder': 'resnet18', 'model.encoder_depth': 3, 'total_steps': 4}\n"
        "    return Experiment(name='two', members=[\n"
        "        Member('a', 'configs/resnet_unet.py:smoke', common),\n"
        "        Member('b', 'configs/resnet_unet.py:smoke', {**common, 'seed': 1})], size=32)\n"
    )
    workdir = tmp_path / "sweep"
    command = ["python", "-m", "segjax.experiments.run", str(experiment), "--workdir",
               str(workdir), f"--set=data.data_dir={tfds_dir}", "--parallel=2"]  # fmt: skip
    # Without the test session's own compilation cache, so that the runner sets the sweep's.
    env = {key: value for key, value in cpu_env().items() if key != "JAX_COMPILATION_CACHE_DIR"}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    command[0] = sys.executable
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "2 members, 2 at a time" in out
    assert "[a] step 4/4" in out and "[b] step 4/4" in out  # each member's lines, prefixed
    # Both trained and evaluated before either was timed, and timing ran one at a time.
    done = max(out.index("[1/2] a: train, eval done"), out.index("[2/2] b: train, eval done"))
    assert out.index("[1/2] a: running speed") > done
    assert out.index("[2/2] b: running speed") > out.index("[1/2] a: running speed")
    records = json.loads((workdir / "results.json").read_text())
    assert [r["name"] for r in records] == ["a", "b"]
    assert all((workdir / m / "speed.json").exists() for m in ("a", "b"))
    assert any((workdir / "jax_cache").iterdir())  # the members' shared compilation cache
    # The packed members trained what they would have trained one at a time.
    alone = run(train_command(tfds_dir, tmp_path / "alone", "--config.total_steps=4"))
    assert alone.returncode == 0, alone.stderr[-3000:]

    def losses(directory):
        lines = (directory / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["train/loss"] for line in lines if "train/loss" in line]

    assert losses(workdir / "a") == pytest.approx(losses(tmp_path / "alone"), rel=1e-5)


def test_sweep_packing_benchmark_reports_the_sweeps_throughput(tfds_dir, shapes_small, tmp_path):
    out = tmp_path / "packing.json"
    command = ["python", "-m", "benchmarks.sweep_packing", "--config",
               "configs/resnet_unet.py:smoke", f"--set=data.data_dir={tfds_dir}",
               "--set=model.encoder=resnet18", "--set=model.encoder_depth=3",
               "--set=total_steps=4", "--parallel=1,2", f"--workdir={tmp_path / 'sweeps'}",
               f"--json={out}"]  # fmt: skip
    result = run(command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["parallel"], r["members"]) for r in rows] == [(1, 1), (2, 2)]
    assert [r["images"] for r in rows] == [16, 32]  # 4 steps of batch 4 per member
    assert all(r["images_per_s"] == pytest.approx(r["images"] / r["wall_s"]) for r in rows)


def test_the_device_script_runs_every_part_at_a_tiny_size(tfds_dir, shapes_small, tmp_path):
    """benchmarks/device/gpu_checks.sh as a lent machine runs it, on this CPU at a tiny size
    and on the tiny synthetic dataset's folder twin."""
    from tests.conftest import varied_items, write_folder

    data = write_folder(tmp_path / "data", varied_items(12))
    out = tmp_path / "out"
    env = {
        **os.environ, "OUT": str(out), "DATA": data, "SIZE": "32", "DEADLINE": "900",
        "SPEED_MODELS": "unet:resnet18", "SPEED_IMPLS": "segjax_fp32,segjax_bf16",
        "TRAIN_BATCHES": "2", "INFER_BATCHES": "1", "SPEED_STEPS": "1", "E2E_BATCH": "4",
        "E2E_STEPS": "6", "E2E_WORKERS": "1", "E2E_ENCODER": "resnet18", "PIPE_THREADS": "1",
        "PIPE_WORKERS": "0", "PIPE_SECONDS": "0.3", "PACK_PARALLEL": "1,2",
        "PACK_SET": f"--set total_steps=2 --set optimizer.warmup_steps=1 --set batch_size=2 "
        "--set model.encoder=resnet18 "
        f"--set data.image_size=32,32 --set data.data_dir={tfds_dir}",
        "DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu", "PY": sys.executable,
        "WHEELS": "",  # this machine's packages, even where .whl/ holds the GPU image's
    }  # fmt: skip
    result = subprocess.run(
        ["bash", "benchmarks/device/gpu_checks.sh"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("gpu_speed.json", "pipeline_gpu_host.json", "sweep_packing.json",
                 "e2e_host_metrics.jsonl", "e2e_device_metrics.jsonl"):  # fmt: skip
        assert (out / name).exists(), result.stdout[-3000:]
    for where in ("host", "device"):
        lines = (out / f"e2e_{where}_metrics.jsonl").read_text().splitlines()
        waits = [json.loads(x)["train/data_wait_fraction"] for x in lines if "data_wait" in x]
        assert waits and all(0.0 <= w <= 1.0 for w in waits)
