"""The founding grid on one GPU: the same members as ``founding.py:grid``, with bfloat16 compute
and 8x the batch for 1/8 of the steps (the same number of images, so the same epochs).

    python -m segjax.experiments.run experiments/founding_h200.py:grid \
        --workdir runs/founding_grid_h200 --nospeed
    experiments/founding/h200_grid.sh     # on a lent GPU machine: all members, four at a time

Everything else is the CPU grid's: data, 96x96 whole images, augmentation, loss, each model's
recipe and learning rate (not rescaled for the larger batch), a dozen validation passes, the
checkpoint of best validation nucleus IoU scored once on the test split. The learning rate is
left as tuned at batch 8 on purpose: the question is whether the CPU grid's answer holds when the
same recipe runs the way a GPU user would run it, not a new tuning.
"""

import os

from segjax.experiments.spec import Experiment, Member, load_module

BATCH_SCALE = 8
DTYPE = "bfloat16"


def _founding():
    return load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "founding.py"))


def scaled(member: Member, founding) -> Member:
    """``member`` at BATCH_SCALE x its batch for 1 / BATCH_SCALE of its steps, in DTYPE."""
    steps = member.overrides["total_steps"] // BATCH_SCALE
    return Member(
        member.name,
        member.config,
        {
            **member.overrides,
            **founding.budget(steps),
            "batch_size": member.overrides["batch_size"] * BATCH_SCALE,
            "log_every_steps": max(1, steps // 50),
            "model.dtype": DTYPE,
        },
    )


def reproduction_table(rows: list[dict], workdir: str, out: str) -> dict[str, str]:
    """``reproduction.md``: the paper U-Net and U-Net++ scored as pytorch-nested-unet scores
    them (founding.nested_unet_iou), beside their published figures."""
    founding = _founding()
    lines = [
        "# founding_grid_h200: pytorch-nested-unet's table reproduced on one GPU",
        "",
        "| model | seeds | their IoU, segjax's run | published | segjax nucleus IoU (set) |",
        "|---|---|---:|---:|---:|",
    ]
    for model, published in founding.PUBLISHED.items():
        members = [r for r in rows if r["name"].rpartition("_seed")[0] == model]
        if not members:
            lines.append(f"| {model} | not finished | | {published} | |")
            continue
        ious = [founding.nested_unet_iou(workdir, r["name"]) for r in members]
        lines.append(
            f"| {model} | {','.join(str(r['seed']) for r in members)} "
            f"| {founding.spread(ious)} | {published} "
            f"| {founding.spread([r['highlight_iou'] for r in members])} |"
        )
    return {"reproduction.md": "\n".join(lines) + "\n"}


def grid() -> Experiment:
    founding = _founding()
    cpu = founding.grid()
    return Experiment(
        name="founding_grid_h200",
        members=[scaled(member, founding) for member in cpu.members],
        eval_split=cpu.eval_split,
        highlight_class=cpu.highlight_class,
        curves=True,
        comparisons=cpu.comparisons,
        tables=reproduction_table,
    )


def get_experiment(variant: str = "grid") -> Experiment:
    if variant != "grid":
        raise ValueError(f"unknown variant {variant!r}; choose 'grid'")
    return grid()
