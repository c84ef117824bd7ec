"""Fine-tuning from a pretrained file: the run starts from exactly its weights, the encoder
options change what moves, and a resumed run never reloads the file."""

import hashlib
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from segjax.defaults import base_config
from segjax.optim import create_optimizer
from tests.cli_utils import assert_one_error_line, run, train_command
from tests.test_pretrained import seeded_file


def updates_over_steps(factor: float, freeze: int, steps: int) -> list[tuple[float, float]]:
    """(encoder update, decoder update) of each step of plain SGD on constant gradients."""
    opt = base_config().optimizer
    opt.name, opt.momentum, opt.weight_decay, opt.grad_clip_norm = "sgd", 0.0, 0.0, 0.0
    opt.schedule, opt.warmup_steps, opt.learning_rate = "constant", 0, 0.1
    opt.encoder_lr_factor, opt.freeze_encoder_steps = factor, freeze
    tx, _ = create_optimizer(opt, total_steps=100)
    params = {
        "encoder": {"conv": {"kernel": np.ones(3)}},
        "decoder": {"head": {"bias": np.ones(2)}},
    }
    grads = jax.tree.map(np.ones_like, params)
    state = tx.init(params)
    moves = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        moves.append(
            (
                float(updates["encoder"]["conv"]["kernel"][0]),
                float(updates["decoder"]["head"]["bias"][0]),
            )
        )
    return moves


def test_encoder_learning_rate_factor_and_freezing_change_what_moves():
    def close(got, expected):
        assert np.allclose(got, expected, rtol=1e-6, atol=0), got

    close(updates_over_steps(1.0, 0, 2), [(-0.1, -0.1)] * 2)
    close(updates_over_steps(0.1, 0, 2), [(-0.01, -0.1)] * 2)
    close(updates_over_steps(0.5, 3, 5), [(0.0, -0.1)] * 3 + [(-0.05, -0.1)] * 2)


def saved_state(workdir, step):
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    return checkpointer.restore(path, restore_args=as_numpy)


@pytest.mark.slow
def test_run_starts_from_the_file_freezes_and_resumes_without_it(tfds_dir, shapes_small, tmp_path):
    weights = seeded_file(tmp_path, "resnet18")
    tensors = {k: v for k, v in __import__("safetensors.numpy").numpy.load_file(weights).items()}
    digest = hashlib.sha256(open(weights, "rb").read()).hexdigest()
    workdir = tmp_path / "run"
    command = train_command(
        tfds_dir,
        workdir,
        f"--config.model.pretrained={weights}",
        "--config.optimizer.freeze_encoder_steps=3",
        "--config.model.freeze_encoder_bn=True",
    )
    result = run(command)
    assert result.returncode == 0, result.stderr
    assert (
        "loaded 50 tensors" in result.stdout and f"into the encoder from {weights}" in result.stdout
    )
    config = json.load(open(workdir / "config.json"))
    assert config["model"]["pretrained"] == weights
    assert config["model"]["pretrained_sha256"] == digest

    expected_conv = tensors["layer2.1.conv2.weight"].transpose(2, 3, 1, 0)
    expected_var = tensors["layer2.0.bn1.running_var"]
    frozen, moved = saved_state(workdir, 3), saved_state(workdir, 6)
    # Steps 1-3: the encoder is exactly the file's; the decoder has trained.
    assert np.array_equal(frozen["params"]["encoder"]["layer2_1"]["conv2"]["kernel"], expected_conv)
    assert np.array_equal(
        frozen["params"]["encoder"]["conv1"]["kernel"],
        tensors["conv1.weight"].transpose(2, 3, 1, 0),
    )
    # Steps 4-6: the encoder trains; its BatchNorm statistics stay the file's (frozen).
    assert not np.array_equal(
        moved["params"]["encoder"]["layer2_1"]["conv2"]["kernel"], expected_conv
    )
    assert np.array_equal(moved["batch_stats"]["encoder"]["layer2_0"]["bn1"]["var"], expected_var)
    decoder_var = moved["batch_stats"]["decoder"]["block0"]["unit"]["bn1"]["var"]
    assert not np.allclose(decoder_var, 1.0)  # the decoder's statistics do update

    # A resumed run takes its checkpoint: the file may be gone.
    os.remove(weights)
    result = run([*command, "--config.total_steps=8"])
    assert result.returncode == 0, result.stderr
    assert "resumed from step 6" in result.stdout and "loaded" not in result.stdout


@pytest.mark.slow
def test_pinned_digest_that_does_not_match_is_refused(tfds_dir, shapes_small, tmp_path):
    weights = seeded_file(tmp_path, "resnet18")
    workdir = tmp_path / "run"
    result = run(
        train_command(
            tfds_dir,
            workdir,
            f"--config.model.pretrained={weights}",
            "--config.model.pretrained_sha256=" + "0" * 64,
        )
    )
    assert_one_error_line(result, 2, "model.pretrained_sha256", "the file is not the one")
    assert not os.path.exists(workdir)  # refused before the workdir was taken (issue 25)
    for bad, message in (
        (tmp_path / "missing.safetensors", "no such file"),
        (seeded_file(tmp_path, "resnet50"), "resnet"),  # another encoder's layout
    ):
        result = run(train_command(tfds_dir, workdir, f"--config.model.pretrained={bad}"))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr.strip().splitlines()[-1]
        assert not os.path.exists(workdir)
