"""Keeping an accelerator busy: the training loop's data-wait fraction, the runner's environment
for members packed onto one device, and the GPU benchmark's bookkeeping (MFU, ratios)."""

import time

import pytest

from segjax.experiments.run import MEMORY_SHARE, member_environment
from segjax.trainer import DataWait


def test_data_wait_is_the_share_of_loop_time_spent_waiting_for_batches():
    wait = DataWait()
    with wait:
        time.sleep(0.05)
    time.sleep(0.05)  # a step that runs while nothing is waited for
    with wait.paused():  # an evaluation: counts neither way
        time.sleep(0.2)
    assert 0.35 < wait.fraction() < 0.65
    wait.restart()
    time.sleep(0.02)
    assert wait.fraction() == 0.0


def test_packed_members_share_the_device_memory_and_one_compilation_cache(tmp_path):
    alone = member_environment(str(tmp_path), 1, environ={})
    assert alone == {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache")}
    packed = member_environment(str(tmp_path), 4, environ={})
    assert float(packed["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(MEMORY_SHARE / 4)
    assert packed["JAX_COMPILATION_CACHE_DIR"] == alone["JAX_COMPILATION_CACHE_DIR"]
    # What the user set wins.
    mine = {"JAX_COMPILATION_CACHE_DIR": "/cache", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"}
    assert member_environment(str(tmp_path), 4, environ=mine) == {}


def test_gpu_benchmark_computes_mfu_by_device_and_ratios_against_the_matching_smp_mode():
    from benchmarks.gpu_speed import peak_tflops, ratios, with_mfu

    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("cpu") is None and peak_tflops("cpu", 2.0) == 2.0

    def row(impl, images_per_s):
        return {"model": "unet:resnet34", "impl": impl, "kind": "train", "batch": 128,
                "device": "NVIDIA H100 80GB HBM3", "flops_per_image": 47e9,
                "images_per_s": images_per_s}  # fmt: skip

    rows = with_mfu(
        [row("segjax_bf16", 6000.0), row("smp_amp", 4000.0), row("smp_compile", 5000.0),
         row("segjax_fp32", 1000.0), row("smp_eager", 2000.0),
         {"model": "unet:resnet34", "impl": "smp_compile", "skipped": "deadline"}],
        0.0,
    )  # fmt: skip
    assert rows[0]["mfu"] == pytest.approx(47e9 * 6000 / 989e12)
    found = {(r["segjax"], r["smp"]): r["ratio"] for r in ratios(rows)}
    assert found == {
        ("segjax_bf16", "smp_amp"): pytest.approx(1.5),
        ("segjax_bf16", "smp_compile"): pytest.approx(1.2),
        ("segjax_fp32", "smp_eager"): pytest.approx(0.5),
    }
