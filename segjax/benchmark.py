"""Speed of a config's model on the current devices: training steps and inference.

Used by ``benchmarks/`` and by the experiment report. Each function is compiled ahead of time
(``compile_s``), then every figure is a median over repeated calls after warm-up. Memory is
XLA's account of the compiled executable (arguments, outputs and temporaries), plus the device's
``peak_bytes_in_use`` where JAX reports it (GPU, TPU; not CPU).
"""

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segjax import parallel
from segjax.data import train_iterator
from segjax.runs import jit_train_step, prepare


def compile_ahead(jitted, *args) -> tuple[Any, float, dict]:
    """Lowers and compiles ``jitted`` for ``args``: (executable, seconds, memory). Memory is XLA's
    own account of the executable (arguments, outputs, temporaries), so it is per model and the
    same on every backend; ``device_peak_bytes`` is added where the device reports it."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    memory = {}
    if analysis is not None:
        memory = {
            "argument_bytes": int(analysis.argument_size_in_bytes),
            "output_bytes": int(analysis.output_size_in_bytes),
            "temp_bytes": int(analysis.temp_size_in_bytes),
            "alias_bytes": int(analysis.alias_size_in_bytes),
        }
        memory["total_bytes"] = (
            memory["argument_bytes"]
            + memory["output_bytes"]
            + memory["temp_bytes"]
            - memory["alias_bytes"]
        )
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        memory["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    return compiled, seconds, memory


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Runs ``call`` (which must block until its result is ready) ``warmup + repeats`` times;
    ``ms`` holds the timed calls after warm-up, ``median_ms`` their median."""
    return time_interleaved({"call": call}, warmup, repeats)["call"]


def time_interleaved(
    calls: dict[str, Callable[[], object]],
    warmup: int,
    repeats: int,
    pause_s: float = 0.0,
    min_seconds: float = 0.0,
    max_repeats: int = 200,
    enough: Callable[[dict[str, list[float]]], bool] | None = None,
    max_seconds: float = float("inf"),
) -> dict[str, dict]:
    """``time_calls`` of several calls in rounds: each round runs every call once, the order
    reversed every other round, so that the machine's speed drifting over the minutes a series
    takes (a shared VM's does, by 30% and more) slows each call alike and their ratio holds.
    ``pause_s`` (untimed) after each call lets the last one's thread pool go idle first.

    Rounds go on past ``repeats`` while the timed ones took less than ``min_seconds`` or
    ``enough`` (given each call's timed milliseconds so far) says no, and stop at
    ``max_repeats`` timed rounds or ``max_seconds`` timed, whichever comes first."""
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup={warmup} and repeats={repeats} must be at least 1")
    times = {name: [] for name in calls}
    names = list(calls)
    timed_s, round_ = 0.0, 0

    def more() -> bool:
        timed_rounds = round_ - warmup
        if timed_rounds < repeats:
            return True
        if timed_rounds >= max(repeats, max_repeats) or timed_s >= max_seconds:
            return False
        if timed_s < min_seconds:
            return True
        timed = {name: [t * 1000 for t in seconds[warmup:]] for name, seconds in times.items()}
        return enough is not None and not enough(timed)

    while more():
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            seconds = time.perf_counter() - start
            times[name].append(seconds)
            timed_s += seconds if round_ >= warmup else 0.0
            time.sleep(pause_s)
        round_ += 1
    results = {}
    for name, seconds in times.items():
        measured = [t * 1000 for t in seconds[warmup:]]
        results[name] = {
            "first_s": seconds[0],
            "ms": measured,
            "median_ms": statistics.median(measured),
            "repeats": len(measured),
        }
    return results


def paired_quotients(numerator: list[float], denominator: list[float]) -> list[float]:
    """Each round's time of one interleaved series over the other's: the round's two calls ran
    back to back, so the machine's drift cancels in each quotient."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def paired_ratio(numerator: dict, denominator: dict) -> float:
    """The median of ``paired_quotients`` of two ``time_interleaved`` series."""
    return statistics.median(paired_quotients(numerator["ms"], denominator["ms"]))


def median_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free interval of the median (95% for z = 1.96): the order statistics
    of ranks n/2 -+ z*sqrt(n)/2 (the binomial count below the median, normally approximated),
    which needs no assumption about how a VM's call times scatter. The whole range for n < 6."""
    ordered = sorted(values)
    n, half = len(ordered), z * math.sqrt(len(ordered)) / 2
    low = max(math.floor(n / 2 - half) - 1, 0)  # 0-based ranks
    high = min(math.ceil(n / 2 + half), n - 1)
    return (ordered[0], ordered[-1]) if n < 6 else (ordered[low], ordered[high])


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


def train_step_call(
    config: ml_collections.ConfigDict, pipeline: bool = False, steps: int = 1, run=None
) -> tuple[Callable[[], None], dict]:
    """``steps`` training steps of ``config`` at ``config.data.image_size`` and
    ``config.batch_size`` dispatched back to back, then waited for, compiled ahead of time, and
    the figures of its compilation. ``run`` is ``prepare(config)`` unless given (a run without
    data, ``runs.prepare_without_data``, times synthetic batches).

    With ``pipeline=False`` the same on-device batch is fed every step (the model and optimizer
    alone); with ``pipeline=True`` each step takes the next batch of the real input pipeline,
    so a run limited by its input shows here and not in the synthetic figure."""
    run = run or prepare(config)
    state = run.init_state(config.seed)
    p_train = jit_train_step(run)
    if pipeline:
        data = train_iterator(run.dataset, config.data, config.batch_size, config.seed)

        def next_batch():
            return parallel.to_global(next(data), run.batch_sharding)
    elif config.data.augment.get("on_device", False):  # raw windows: their warp is timed too
        data = train_iterator(run.dataset, config.data, config.batch_size, config.seed)
        fixed = parallel.to_global(next(data), run.batch_sharding)
        data.close()

        def next_batch():
            return fixed
    else:
        fixed = synthetic_batch(run, config.batch_size, run.dataset.num_classes, config.seed)

        def next_batch():
            return fixed

    compiled, compile_s, memory = compile_ahead(p_train, state, next_batch())

    def step():
        nonlocal state
        for _ in range(steps):
            state, scalars = compiled(state, next_batch())
        jax.block_until_ready(scalars)

    return step, {
        "compile_s": compile_s,
        "memory": memory,
        "steps_per_call": steps,
        "batch_size": config.batch_size,
        "image_size": tuple(config.data.image_size),
        "input": "pipeline" if pipeline else "synthetic",
    }


def forward_call(
    config: ml_collections.ConfigDict,
    batch_size: int,
    image_size: tuple[int, int],
    steps: int = 1,
    run=None,
) -> tuple[Callable[[], None], dict]:
    """``steps`` forward passes in eval mode (BatchNorm statistics, no dropout) at
    ``image_size`` dispatched back to back, then waited for, compiled ahead of time, and the
    figures of its compilation (``run`` as in ``train_step_call``). Deep-supervised models
    return every head, as the evaluation's 'accurate' mode needs them."""
    run = run or prepare(config)
    variables = run.init_state(0).variables
    images = jax.device_put(
        jnp.asarray(
            np.random.default_rng(0).standard_normal(
                (batch_size, *image_size, run.input_shape[3]), np.float32
            )
        ),
        run.batch_sharding if batch_size % jax.device_count() == 0 else run.replicated,
    )
    forward = jax.jit(lambda v, x: run.model.apply(v, x, train=False))
    compiled, compile_s, memory = compile_ahead(forward, variables, images)

    def call():
        for _ in range(steps):
            outputs = compiled(variables, images)
        jax.block_until_ready(outputs)

    return call, {
        "compile_s": compile_s,
        "memory": memory,
        "steps_per_call": steps,
        "batch_size": batch_size,
        "image_size": tuple(image_size),
    }


def with_throughput(timed: dict, figures: dict) -> dict:
    """A timed series with its call's figures and the images per second of its median (a call
    of several steps counts each)."""
    images = figures["batch_size"] * figures.get("steps_per_call", 1)
    return {**timed, **figures, "images_per_s": images / (timed["median_ms"] / 1000)}


def train_speed(
    config: ml_collections.ConfigDict, warmup: int = 2, repeats: int = 5, pipeline: bool = False
) -> dict:
    """Training step time of ``config`` (``train_step_call``), timed alone."""
    step, figures = train_step_call(config, pipeline)
    return with_throughput(time_calls(step, warmup, repeats), figures)


def inference_speed(
    config: ml_collections.ConfigDict,
    batch_size: int,
    image_size: tuple[int, int],
    warmup: int = 2,
    repeats: int = 5,
) -> dict:
    """Forward-pass latency of ``config`` at ``batch_size`` (``forward_call``), timed alone."""
    call, figures = forward_call(config, batch_size, image_size)
    return with_throughput(time_calls(call, warmup, repeats), figures)
