"""Speed of a config's model on the current devices: training steps and inference.

Used by ``benchmarks/`` and by the experiment report. Every figure is a median over repeated calls
after warm-up (the first call compiles; its time is reported separately as ``compile_s``). Peak
memory is the accelerator's ``peak_bytes_in_use`` where JAX reports it, else this process's peak
resident memory (host RAM, which on CPU is where the arrays live).
"""

import resource
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segjax import parallel
from segjax.data import train_iterator
from segjax.train import jit_train_step, setup_run


def peak_memory() -> tuple[int | None, str]:
    """(bytes, where): the first device's peak if JAX knows it, else the process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "host"


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Runs ``call`` (which must block until its result is ready) ``warmup + repeats`` times.
    ``compile_s`` is the first call, ``ms`` the timed calls after warm-up."""
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup={warmup} and repeats={repeats} must be at least 1")
    times = []
    for _ in range(warmup + repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    measured = [t * 1000 for t in times[warmup:]]
    return {
        "compile_s": times[0],
        "ms": measured,
        "median_ms": statistics.median(measured),
        "repeats": repeats,
    }


def synthetic_batch(run, batch_size: int, num_classes: int, seed: int = 0) -> dict:
    """A global batch of random images and labels, already on the devices."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, *run.input_shape[1:3])
    batch = {
        "image": rng.standard_normal((*shape, run.input_shape[3])).astype(np.float32),
        "label": rng.integers(0, max(num_classes, 2), shape).astype(np.int32),
        "valid": np.ones(shape, bool),
    }
    return jax.device_put(batch, run.batch_sharding)


def train_speed(
    config: ml_collections.ConfigDict, warmup: int = 2, repeats: int = 5, pipeline: bool = False
) -> dict:
    """Training step time of ``config`` at ``config.data.image_size`` and ``config.batch_size``.

    With ``pipeline=False`` the same on-device batch is fed every step (the model and optimizer
    alone); with ``pipeline=True`` each step takes the next batch of the real input pipeline,
    so a run limited by its input shows here and not in the synthetic figure."""
    run = setup_run(config)
    state = jax.jit(run.init_fn(), out_shardings=run.replicated)(jax.random.PRNGKey(config.seed))
    p_train = jit_train_step(run, config)
    if pipeline:
        data = train_iterator(run.dataset, config.data, config.batch_size, config.seed)

        def next_batch():
            return parallel.to_global(next(data), run.batch_sharding)
    else:
        fixed = synthetic_batch(run, config.batch_size, run.dataset.num_classes, config.seed)

        def next_batch():
            return fixed

    def step():
        nonlocal state
        state, scalars = p_train(state, next_batch())
        jax.block_until_ready(scalars)

    result = time_calls(step, warmup, repeats)
    memory, where = peak_memory()
    return {
        **result,
        "images_per_s": config.batch_size / (result["median_ms"] / 1000),
        "batch_size": config.batch_size,
        "image_size": tuple(config.data.image_size),
        "peak_memory_bytes": memory,
        "peak_memory_where": where,
        "input": "pipeline" if pipeline else "synthetic",
    }


def inference_speed(
    config: ml_collections.ConfigDict,
    batch_size: int,
    image_size: tuple[int, int],
    warmup: int = 2,
    repeats: int = 5,
) -> dict:
    """Forward pass in eval mode (BatchNorm statistics, no dropout) at ``image_size``: the
    latency of one call at ``batch_size`` and the images per second it implies. Deep-supervised
    models return every head, as the evaluation's 'accurate' mode needs them."""
    run = setup_run(config)
    state = jax.jit(run.init_fn(), out_shardings=run.replicated)(jax.random.PRNGKey(0))
    variables = {
        "params": state.params,
        **({"batch_stats": state.batch_stats} if state.batch_stats else {}),
    }
    images = jax.device_put(
        jnp.asarray(
            np.random.default_rng(0).standard_normal(
                (batch_size, *image_size, run.input_shape[3]), np.float32
            )
        ),
        run.batch_sharding if batch_size % jax.device_count() == 0 else run.replicated,
    )
    forward = jax.jit(lambda v, x: run.model.apply(v, x, train=False))
    result = time_calls(lambda: jax.block_until_ready(forward(variables, images)), warmup, repeats)
    return {
        **result,
        "images_per_s": batch_size / (result["median_ms"] / 1000),
        "batch_size": batch_size,
        "image_size": tuple(image_size),
    }
