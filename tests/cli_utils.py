"""Helpers for tests that run segjax's commands as a user would: in a subprocess, on CPU."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

ROOT = pathlib.Path(__file__).parents[1]

# Every test process compiles with LLVM unoptimised: the same HLO programs (XLA's own passes still
# run), compiled 3-9x faster (a tiny U-Net's initialisers: 17.6 s -> 1.9 s), which is most of what
# the tests spend; the programs the tests run are tiny, so their slower code costs nothing.
FAST_COMPILE = "--xla_backend_optimization_level=0"

# U-Net/ResNet-18 of depth 3 on 32x32 crops of the tiny synthetic dataset (the smoke variant).
TINY = [
    "--config",
    "configs/resnet_unet.py:smoke",
    "--config.model.encoder=resnet18",
    "--config.model.encoder_depth=3",
]


def train_command(tfds_dir, workdir, *overrides, module="segjax.train"):
    return [
        sys.executable,
        "-m",
        module,
        *TINY,
        f"--config.data.data_dir={tfds_dir}",
        "--workdir",
        str(workdir),
        *overrides,
    ]


def cpu_env(devices=1):
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
        "JAX_PLATFORMS": "cpu",
    }


def run(command, devices=1, env_extra=None, **kwargs):
    """Runs ``command`` from the repository root on CPU; output captured, never raising."""
    if command[0] == "python":
        command = [sys.executable, *command[1:]]
    return subprocess.run(
        command, cwd=ROOT, env={**cpu_env(devices), **(env_extra or {})}, capture_output=True,
        text=True, check=False, **kwargs,
    )  # fmt: skip


def start(command, **kwargs):
    """``command`` in the background (its own session, so a kill reaches only it)."""
    return subprocess.Popen(
        command, cwd=ROOT, env=cpu_env(), start_new_session=True, text=True, **kwargs
    )


def losses(workdir, key="train/loss"):
    """{step: value} of ``key`` in metrics.jsonl (the last record of a step, if logged twice)."""
    out = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        record = json.loads(line)
        if key in record:
            out[record["step"]] = record[key]
    return out


def logged_steps(workdir):
    """The step of every metrics.jsonl record, in order (a step logged twice appears twice)."""
    return [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def final_params(workdir, step):
    """The saved parameters as NumPy arrays (whatever devices wrote them)."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    restored = checkpointer.restore(path, restore_args=as_numpy)
    leaves, _ = jax.tree_util.tree_flatten_with_path(restored["params"])
    return {jax.tree_util.keystr(key): np.asarray(leaf) for key, leaf in leaves}


def assert_same_params(a, b, **tolerance):
    assert a.keys() == b.keys()
    for key in a:
        if tolerance:
            np.testing.assert_allclose(a[key], b[key], err_msg=key, **tolerance)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def wait_for(predicate, process, timeout=240):
    start_time = time.time()
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the command ended early: {process.communicate()}")
        if time.time() - start_time > timeout:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def file_hashes(directory) -> dict[str, str]:
    """sha256 of every file under ``directory``, by relative path: a refused command must leave
    this unchanged."""
    hashes = {}
    for path in sorted(pathlib.Path(directory).rglob("*")):
        if path.is_file():
            hashes[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def assert_one_error_line(result, code, *fragments):
    """Exit ``code``, no traceback, and one ``error:`` line, the last, holding ``fragments``."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # Lines as a script's grep sees them: split at newlines only (a progress bar's carriage
    # returns do not start a line).
    lines = result.stderr.rstrip("\n").split("\n")
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert lines[-1] == errors[0], repr(lines[-1][-300:])
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
