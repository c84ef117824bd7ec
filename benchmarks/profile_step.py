"""Where a training step's time goes: segjax's XLA ops, and smp's torch ops for comparison.

    python -m benchmarks.profile_step --config configs/resnet_unet.py:dsb2018 \\
        --models unet:resnet34,unet:ghostnet_100 [--steps 3]

segjax: the real ``train_step`` (synthetic on-device batch) under ``jax.profiler.trace``; the
trace's XLA op events are summed per kind (the op name without its number, e.g. ``ynn_fusion``,
``transpose_copy_fusion``, ``convolution-base-dilated``). smp (with the ``bench`` extra): the
equivalent model's step (forward, cross-entropy + Dice, backward, AdamW) under
``torch.profiler``, summed per aten op. Both are per step, averaged over ``--steps``.
"""

import collections
import glob
import gzip
import json
import re
import sys
import tempfile

import jax
from absl import flags
from ml_collections import config_flags

from benchmarks import smp_reference
from benchmarks.speed import configs_from_flags, name_of
from segjax import cli
from segjax.benchmark import synthetic_batch
from segjax.runs import jit_train_step, prepare


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "config file (with :variant)", lock_config=True)
    flags.DEFINE_list("models", [], "arch[:encoder] pairs (default: the config's own model)")
    flags.DEFINE_integer("steps", 3, "profiled steps, after 2 unprofiled ones")
    flags.DEFINE_integer("top", 8, "op kinds to list")


# Host-side and runtime events that contain the op events rather than being ops themselves.
_NOT_OPS = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjRt", "Execute", "PjitFunction")


def xla_op_times(config, steps: int) -> tuple[collections.Counter, collections.Counter]:
    """(ms per step, number of ops) per XLA op kind in the train step."""
    run = prepare(config)
    state = run.init_state(config.seed)
    p_train = jit_train_step(run)
    batch = synthetic_batch(run, config.batch_size, run.dataset.num_classes, config.seed)
    for _ in range(2):
        state, scalars = p_train(state, batch)
        jax.block_until_ready(scalars)
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(steps):
                state, scalars = p_train(state, batch)
                jax.block_until_ready(scalars)
        path = glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    times, counts = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or "dur" not in event or name.startswith(_NOT_OPS):
            continue
        kind = re.sub(r"[._]\d+$", "", name)
        times[kind] += event["dur"] / 1000 / steps
        counts[kind] += 1 / steps
    return times, counts


def torch_op_times(config, steps: int) -> tuple[collections.Counter, collections.Counter]:
    import segmentation_models_pytorch as smp
    import torch
    from torch.profiler import ProfilerActivity, profile

    run = prepare(config)
    channels, classes = run.input_shape[-1], max(run.dataset.num_classes, 1)
    model = smp_reference.build(config, classes, channels).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.learning_rate)
    dice = smp.losses.DiceLoss("multiclass", from_logits=True)
    images = torch.randn(config.batch_size, channels, *config.data.image_size)
    labels = torch.randint(0, classes, (config.batch_size, *config.data.image_size))

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        (torch.nn.functional.cross_entropy(logits, labels) + dice(logits, labels)).backward()
        optimizer.step()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    times, counts = collections.Counter(), collections.Counter()
    for average in profiler.key_averages():
        times[average.key] += average.self_cpu_time_total / 1000 / steps
        counts[average.key] += average.count / steps
    return times, counts


def print_kinds(title: str, times: collections.Counter, counts: collections.Counter, top: int):
    total = sum(times.values())
    print(f"\n{title}: {total:.0f} ms of ops per step")
    for kind, ms in times.most_common(top):
        print(f"  {ms:8.1f} ms {100 * ms / total:5.1f}%  {kind} ({counts[kind]:.0f} per step)")


def main(argv) -> int:
    args = flags.FLAGS
    for config in configs_from_flags(argv):
        name = name_of(config)
        print_kinds(f"segjax {name}", *xla_op_times(config, args.steps), args.top)
        why_not = smp_reference.available() or smp_reference.unsupported(config)
        if why_not:
            print(f"smp {name}: not run: {why_not}")
        else:
            print_kinds(f"smp {name}", *torch_op_times(config, args.steps), args.top)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
