"""The founding question at a converged, tuned budget, on DSB 2018 (464 / 100 / 100 images).

Two experiments share one protocol (``PROTOCOL``), each a variant of this file:

    python -m segjax.imagenet_weights --out weights      # once: the two ImageNet files
    python -m segjax.experiments.run experiments/founding.py:tuning --workdir runs/founding_tuning
    python -m segjax.experiments.run experiments/founding.py:grid --workdir runs/founding_grid
    python -m segjax.experiments.report experiments/founding.py:tuning \
        --workdir runs/founding_tuning --out experiments/founding/tuning
    python -m segjax.experiments.report experiments/founding.py:grid \
        --workdir runs/founding_grid --out experiments/founding/grid

- ``tuning``: U-Net on each encoder family at ``TUNING_STEPS``, one seed, every recipe of
  ``RECIPES``, scored on the validation split only: a family's chosen recipe is its best
  validation nucleus IoU (``tuning.md``).
- ``grid``: every model of the founding question (``steps_of``) at its encoder's grid recipe
  (``GRID_RECIPE``), seeds 0-2, chosen on validation, the test split scored once; the paper
  U-Net and U-Net++ reproduce pytorch-nested-unet's table (0.839 / 0.842 IoU, ``answer.md``).

Protocol: whole images resized to 96x96, for training and for scoring, as both published anchors
do (pytorch-nested-unet at 96x96, U-Bench at 256x256), so the numbers compare with theirs; on this
2-core CPU it also makes validation cheap enough to run a dozen times per member, which the
convergence criterion needs. Batch 8, the ``:dsb2018`` augmentation (flips, quarter turns, colour
jitter), cross-entropy + Dice, checkpoint of best validation nucleus IoU.
"""

import json
import os
import statistics

from segjax.experiments import curves, paired
from segjax.experiments.report import class_index
from segjax.experiments.report_parts import cell, median_measured, plot_tradeoff
from segjax.experiments.seeds import SEED_SUFFIX
from segjax.experiments.spec import Experiment, Member
from segjax.models.weights.packaged import PACKAGED

SEEDS = (0, 1, 2)
TUNING_STEPS = 600
# 1500 steps fell short: U-Net/ResNet-34 (seed 0) gained 0.0066 over its last quarter
# (experiments/founding/grid_1500/); 3000 is what the grid can afford on this CPU.
GRID_STEPS = 3000
# A model any member of which misses the criterion at its budget trains the next one, every seed;
# the shorter runs' records stay in experiments/founding/grid_<steps>/. At GRID_STEPS, so far,
# each on its seed 0: U-Net++, last-quarter gains 0.0054 (ResNet-34) and 0.0070 (GhostNet-1.0);
# U-Net on MobileNetV2 0.0055 and on GhostNet-1.0 with the Ghost decoder 0.0061; U-Net on
# GhostNet-1.0 on seed 1, 0.0055; U-Net on ResNet-34 on seed 1, 0.0098. At 4500, U-Net on
# ResNet-34 on seed 2, 0.0067 (0.8289 at step 3375 -> 0.8355 at 3750). The paper U-Net++ at
# GRID_STEPS, 0.0078 (0.8463 at step 2250 -> 0.8541 at 2750). The paper U-Net on seed 2, 0.0053
# (0.8492 at step 1750 -> 0.8544 at 2750). At 6000, U-Net/ResNet-34 seed 1, 0.0055 (0.8333 at
# step 4000 -> 0.8388 at 5500): gains shrink ~0.001 per 1500 steps, so 9000, not 7500.
LONG_BUDGETS = {
    "unetpp_resnet34": 4500,
    "unetpp_ghostnet100": 4500,
    "unet_mobilenetv2": 4500,
    "unet_ghostnet100_ghostdecoder": 4500,
    "unet_ghostnet100": 4500,
    "unet_resnet34": 9000,
    "unetpp_paper": 4500,
    "unet_paper": 4500,
}
# The paper U-Net++, only the reproduction's: seed 0. 1080 steps (one 3-hour session, 2.9-7.9 s a
# step) missed the criterion, a last-quarter gain of 0.0089 (experiments/founding/grid_1080/), and
# so did GRID_STEPS (above); 4500 take 3.6-9.9 h here (it trained on a lent H200: README).
REPRODUCTION_ONLY = {"unetpp_paper": (0,)}
EVALUATIONS = 12  # validation passes per member, evenly spaced

PROTOCOL = {
    "batch_size": 8,
    "data.image_size": (96, 96),
    "data.eval_size": (96, 96),
    "data.augment.whole_image": True,
    "best_metric": "iou/nucleus",
    "log_every_steps": 25,
    "keep_checkpoints": 1,  # the latest, and the best on validation
}

# The optimiser recipes the tuning compares: AdamW with cosine decay at four learning rates
# (5% linear warm-up, segjax's gradient clipping at norm 1; 1e-2 added once three families came
# out best at 3e-3, the top of the first three), and U-Bench's SGD (lr 0.01,
# momentum 0.9, weight decay 1e-4, poly(0.9) decay to 0, no warm-up, no clipping).
RECIPES = {
    "adamw3e-4": {"optimizer.name": "adamw", "optimizer.learning_rate": 3e-4},
    "adamw1e-3": {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-3},
    "adamw3e-3": {"optimizer.name": "adamw", "optimizer.learning_rate": 3e-3},
    "adamw1e-2": {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-2},
    "adamw3e-2": {"optimizer.name": "adamw", "optimizer.learning_rate": 3e-2},
    "sgd": {
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.01,
        "optimizer.momentum": 0.9,
        "optimizer.weight_decay": 1e-4,
        "optimizer.schedule": "polynomial",
        "optimizer.power": 0.9,
        "optimizer.end_lr_factor": 0.0,
        "optimizer.grad_clip_norm": 0.0,
    },
}

# The converted ImageNet files' digests (python -m segjax.imagenet_weights writes the same bytes).
CONVERTED_SHA256 = {
    "mobilenet_v2": "4e7dcf27a2418356821142e811f116024084d47d3fa59584ade9371d0b985daa",
    "efficientnet_lite0": "70c00cb9ebb4ebae4b6c2e9627b49e1448f5a80955c8c140f61a77921589bbd0",
}


# The recipes every family is tuned with, and the rates tried beyond them: a family whose best
# AdamW rate is the highest it tried gets the next one up (GhostNet-1.0 came out best at 1e-2),
# so each family's chosen rate has a lower-scoring rate on both sides.
COMMON_RECIPES = ("adamw3e-4", "adamw1e-3", "adamw3e-3", "adamw1e-2", "sgd")
EXTENDED = {"ghostnet100": ("adamw3e-2",)}


def recipes_of(family: str) -> tuple[str, ...]:
    return COMMON_RECIPES + EXTENDED.get(family, ())


def imagenet(weights: str) -> dict:
    return {
        "model.pretrained": f"weights/{PACKAGED[weights].name}.safetensors",
        "model.pretrained_sha256": CONVERTED_SHA256[weights],
    }


# Encoder family -> (config, overrides): ResNet-34 and GhostNet-1.0 from random weights (no
# ImageNet file of theirs can be reached), MobileNetV2 and EfficientNet-Lite0 from ImageNet.
FAMILIES = {
    "resnet34": ("configs/resnet_unet.py:dsb2018", {"model.encoder": "resnet34"}),
    "ghostnet100": ("configs/ghost_unet.py:dsb2018", {"model.encoder": "ghostnet_100"}),
    "mobilenetv2": ("configs/mobilenet_unet.py:dsb2018", imagenet("mobilenet_v2")),
    "efficientnetlite0": (
        "configs/efficientnet_lite_unet.py:dsb2018",
        imagenet("efficientnet_lite0"),
    ),
}

# The recipe each family trains with in the grid: its best validation nucleus IoU in the tuning
# table (experiments/founding/tuning/results.md; the report checks this choice against it).
CHOSEN = {
    "resnet34": "adamw1e-3",
    "ghostnet100": "adamw1e-2",
    "mobilenetv2": "adamw3e-3",
    "efficientnetlite0": "adamw3e-3",
}

# The recipe each family trains with in the grid: its tuning choice, except GhostNet-1.0's. At
# AdamW 1e-2 and 3000 steps its U-Nets dipped hard mid-run (validation 0.28, 0.46), two of three
# missed the convergence criterion (last-quarter gains 0.0065, 0.0115) and two lost 13-22 points
# in int8 (experiments/founding/grid_ghostnet_1e-2/); 3e-3 scored within one seed's noise of 1e-2
# in tuning (0.7950 against 0.7990) and is the ImageNet encoders' rate.
GRID_RECIPE = {**CHOSEN, "ghostnet100": "adamw3e-3"}

# pytorch-nested-unet's network: 32..512 filters, BatchNorm after every convolution, no dropout.
NESTED_UNET_PAPER = {"model.filters": (32, 64, 128, 256, 512), "model.norm": "batch"}
NESTED_UNET_PAPER["model.dropout"] = 0.0
# ... and its recipe: Adam at 1e-3 with weight decay 1e-4, cosine decay to 1e-5, BCE / 2 + Dice.
NESTED_UNET_RECIPE = {
    **RECIPES["adamw1e-3"],
    "optimizer.end_lr_factor": 0.01,
    "loss.weights.cross_entropy": 0.5,
}


# Grid models: (name, family whose recipe it takes, config, overrides).
def family(name: str, extra: dict | None = None) -> tuple[str, dict]:
    """(config, overrides) of a family's U-Net, with ``extra`` overrides."""
    config, overrides = FAMILIES[name]
    return config, {**overrides, **(extra or {})}


GRID = (
    ("unet_resnet34", "resnet34", *family("resnet34")),
    ("unet_ghostnet100", "ghostnet100", *family("ghostnet100")),
    (
        "unet_ghostnet100_ghostdecoder",
        "ghostnet100",
        *family("ghostnet100", {"model.decoder_block": "ghost"}),
    ),
    ("unet_mobilenetv2", "mobilenetv2", *family("mobilenetv2")),
    ("unet_efficientnetlite0", "efficientnetlite0", *family("efficientnetlite0")),
    ("unetpp_resnet34", "resnet34", *family("resnet34", {"model.arch": "unetpp"})),
    ("unetpp_ghostnet100", "ghostnet100", *family("ghostnet100", {"model.arch": "unetpp"})),
    ("unet_paper", None, "configs/unet_paper.py:dsb2018", NESTED_UNET_PAPER),
    ("unetpp_paper", None, "configs/unetpp_paper.py:dsb2018", NESTED_UNET_PAPER),
)


# The paired tests of the grid (model A, model B): the founding question's pairs, the Ghost
# decoder's, the paper models' and (added once the grid had finished) the small-device pick's.
COMPARISONS = (
    ("unet_ghostnet100", "unet_resnet34"),
    ("unetpp_ghostnet100", "unetpp_resnet34"),
    ("unetpp_resnet34", "unet_resnet34"),
    ("unetpp_ghostnet100", "unet_ghostnet100"),
    ("unet_mobilenetv2", "unet_ghostnet100"),
    ("unet_efficientnetlite0", "unet_ghostnet100"),
    ("unet_ghostnet100_ghostdecoder", "unet_ghostnet100"),
    ("unetpp_paper", "unet_paper"),
    ("unet_mobilenetv2", "unet_paper"),
)


def budget(steps: int) -> dict:
    every = steps // EVALUATIONS
    return {
        **PROTOCOL,
        "total_steps": steps,
        "eval_every_steps": every,
        "checkpoint_every_steps": every,
        "optimizer.warmup_steps": steps // 20,
    }


def steps_of(model: str) -> int:
    return LONG_BUDGETS.get(model, GRID_STEPS)


def longer_budgets() -> str:
    """The longer budgets, as ``4500: a, b; 9000: c``."""
    by_steps: dict[int, list[str]] = {}
    for model, steps in LONG_BUDGETS.items():
        by_steps.setdefault(steps, []).append(model)
    return "; ".join(f"{steps}: {', '.join(models)}" for steps, models in sorted(by_steps.items()))


def recipe(name: str) -> dict:
    overrides = dict(RECIPES[name])
    if name == "sgd":
        overrides["optimizer.warmup_steps"] = 0
    return overrides


def tuning_tables(rows: list[dict], workdir: str, out: str) -> dict[str, str]:
    """``tuning.md``: best validation nucleus IoU of every family and recipe, the best recipe
    per family, and whether ``CHOSEN`` agrees with it."""
    scores = {row["name"]: row["highlight_iou"] for row in rows}
    lines = [
        "# founding_tuning: the recipe per encoder",
        "",
        f"U-Net, {TUNING_STEPS} steps (seed 0): validation nucleus IoU of the checkpoint of best "
        "validation nucleus IoU (the test split is not used). AdamW: cosine decay after a 5% "
        "warm-up; SGD: U-Bench's recipe (lr 0.01, momentum 0.9, weight decay 1e-4, poly 0.9). "
        "A family whose best AdamW rate was the highest it tried was tried one rate higher "
        "(not tried: no need).",
        "",
        "| encoder | " + " | ".join(RECIPES) + " | best | CHOSEN |",
        "|---" + "|---:" * len(RECIPES) + "|---|---|",
    ]
    for family in FAMILIES:
        values = {r: scores.get(f"unet_{family}_{r}") for r in recipes_of(family)}
        done = {r: v for r, v in values.items() if v is not None}
        best = max(done, key=done.get) if len(done) == len(values) else None
        cells = [
            "not tried"
            if r not in values
            else "-"
            if values[r] is None
            else (f"**{values[r]:.4f}**" if r == best else f"{values[r]:.4f}")
            for r in RECIPES
        ]
        agrees = (
            "(unfinished)" if best is None else ("agrees" if CHOSEN[family] == best else "DIFFERS")
        )
        lines.append(
            f"| {family} | " + " | ".join(cells) + f" | {best or '-'} | {CHOSEN[family]} {agrees} |"
        )
    return {"tuning.md": "\n".join(lines) + "\n"}


# pytorch-nested-unet's published validation IoU on DSB 2018 at 96x96 (its README).
PUBLISHED = {"unet_paper": 0.839, "unetpp_paper": 0.842}


def spread(values: list[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.fmean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def test_record(workdir: str, name: str) -> dict:
    with open(os.path.join(workdir, name, "eval_test.json")) as file:
        return json.load(file)


def nested_unet_iou(workdir: str, name: str) -> float:
    """A member's test IoU as pytorch-nested-unet computes it (batches of 16, pooled)."""
    records = test_record(workdir, name)["per_image"]
    index = class_index(os.path.join(workdir, name), "nucleus")
    return paired.batch_pooled_iou(records, index, batch_size=16)


def read_optional(out: str, name: str) -> dict:
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else {}


def grid_tables(rows: list[dict], workdir: str, out: str) -> dict[str, str]:
    """``answer.md``: per model over its seeds, test accuracy, then training speed, size and
    latency (``deploy.json`` from benchmarks.deploy and ``int8.json`` from int8_accuracy.py, when
    measured, in ``out``); and the reproduction of pytorch-nested-unet's table."""
    models: dict[str, list[dict]] = {}
    for row in rows:
        models.setdefault(SEED_SUFFIX.sub("", row["name"]), []).append(row)
    deploy = {r["model"]: r for r in read_optional(out, "deploy.json").get("rows", [])}
    int8 = read_optional(out, "int8.json")
    lines = [
        "# founding_grid: the answer table",
        "",
        f"{GRID_STEPS} steps of batch 8 ({longer_budgets()}) on whole images "
        "resized to 96x96, each encoder's grid recipe (GRID_RECIPE: the tuning's choice; "
        "GhostNet-1.0 AdamW 3e-3, see README); test split (100 images at 96x96), checkpoint of "
        "best validation nucleus IoU; "
        "mean +- sample sd over seeds. Nucleus IoU (set): pooled over the split's pixels; per "
        "image: averaged over images. Steps to 95%: first evaluation reaching 95% of the best "
        "validation nucleus IoU, the checkpoint scored (mean over seeds); seconds: times each "
        "seed's step timed alone; train img/s, JAX ms: the median over seeds' speed phases. "
        "int8: activation ranges from min/max (int8_accuracy.py), each seed's drop (one seed's "
        "collapse would make a mean +- sd meaningless).",
        "",
        "| model | seeds | test nucleus IoU (set) | per image | test mIoU | params | GMACs@256 "
        "| steps to 95% | s to 95% | train img/s | JAX ms b1@256 | ORT fp32 ms | ORT int8 ms "
        "| ONNX fp32 / int8 MB | int8 - fp32 test IoU, per seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for model, members in models.items():
        first = members[0]
        to_95, seconds = [], []
        for row in members:
            curve = curves.validation_curve(os.path.join(workdir, row["name"]), "iou/nucleus")
            to_95.append(curves.steps_to_fraction(curve))
            seconds.append(to_95[-1] * row["batch_size"] / row["train_img_per_sec"])
        measured = deploy.get(model, {})
        runtimes, files = measured.get("runtimes", {}), measured.get("files", {})

        def latency(runtime, runtimes=runtimes):
            value = runtimes.get(runtime, {}).get("1", {}).get("median_ms")
            return "-" if value is None else f"{value:.1f}"

        sizes = f"{files['onnx_fp32'] / 1e6:.1f} / {files['onnx_int8'] / 1e6:.1f}" if files else "-"
        drops = [int8[r["name"]]["difference"] for r in members if r["name"] in int8]
        lines.append(
            f"| {model} | {','.join(str(r['seed']) for r in members)} "
            f"| {spread([r['highlight_iou'] for r in members])} "
            f"| {spread([test_record(workdir, r['name'])['image_iou/nucleus'] for r in members])} "
            f"| {spread([r['miou'] for r in members])} | {first['params']:,} "
            f"| {first['gmacs']:.2f} | {statistics.fmean(to_95):.0f} "
            f"| {cell(statistics.fmean(seconds), '{:.0f}')} "
            f"| {cell(median_measured(members, 'train_img_per_sec'), '{:.1f}')} "
            f"| {cell(median_measured(members, 'inference_ms'), '{:.1f}')} | {latency('ort_fp32')} "
            f"| {latency('ort_int8')} "
            f"| {sizes} | {', '.join(f'{d:+.4f}' for d in drops) or '-'} |"
        )
    lines += seed_spread_lines(models, workdir)
    lines += [
        "",
        "## pytorch-nested-unet's table reproduced",
        "",
        "Its IoU: the nucleus pixels pooled over each batch of 16 test images in the split's "
        "order, (intersection + 1e-5) / (union + 1e-5), averaged over batches.",
        "",
        "| model | seeds | their IoU, segjax's run | published | segjax nucleus IoU (set) |",
        "|---|---|---:|---:|---:|",
    ]
    for model, published in PUBLISHED.items():
        members = models.get(model, [])
        if not members:
            lines.append(f"| {model} | not finished | | {published} | |")
            continue
        ious = [nested_unet_iou(workdir, r["name"]) for r in members]
        lines.append(
            f"| {model} | {','.join(str(r['seed']) for r in members)} | {spread(ious)} "
            f"| {published} | {spread([r['highlight_iou'] for r in members])} |"
        )
    plot_pareto(models, deploy, os.path.join(out, "pareto.png"))
    lines += ["", "![test nucleus IoU against int8 latency](pareto.png)"]
    return {"answer.md": "\n".join(lines) + "\n"}


def seed_spread_lines(models: dict[str, list[dict]], workdir: str) -> list[str]:
    """The extra-seeds rule applied: each model's best validation nucleus IoU per seed, their
    sd over seeds 0-2, and whether the rule asks for seeds 3 and 4."""
    lines = [
        "",
        "## Spread over seeds: the extra-seeds rule",
        "",
        f"Best validation nucleus IoU per seed; a model whose sd over seeds 0-2 exceeds "
        f"{EXTRA_SEEDS_ABOVE} gets seeds 3 and 4.",
        "",
        "| model | best validation per seed | sd, seeds 0-2 | extra seeds |",
        "|---|---|---:|---|",
    ]
    for model, members in models.items():
        best = {
            r["seed"]: max(
                v
                for _, v in curves.validation_curve(os.path.join(workdir, r["name"]), "iou/nucleus")
            )
            for r in members
        }
        first = [best[seed] for seed in SEEDS if seed in best]
        if model in REPRODUCTION_ONLY:
            sd, verdict = "-", "none (reproduction only)"
        elif len(first) < len(SEEDS):
            sd, verdict = "-", "seeds 0-2 not finished"
        else:
            deviation = statistics.stdev(first)
            sd = f"{deviation:.4f}"
            if model in EXTRA_SEEDS:
                verdict = f"seeds {', '.join(map(str, EXTRA_SEEDS[model]))}"
            elif deviation > EXTRA_SEEDS_ABOVE:
                verdict = "DUE: add seeds 3 and 4 to EXTRA_SEEDS"
            else:
                verdict = "none needed"
        per_seed = ", ".join(f"{seed}: {value:.4f}" for seed, value in sorted(best.items()))
        lines.append(f"| {model} | {per_seed} | {sd} | {verdict} |")
    return lines


def plot_pareto(models: dict[str, list[dict]], deploy: dict, path: str) -> None:
    """Test nucleus IoU (mean, bars: sd over seeds) against onnxruntime int8 latency at batch
    1, 256x256; marker area grows with parameters. Models without a latency are left out."""
    points = []
    for model, members in models.items():
        latency = deploy.get(model, {}).get("runtimes", {}).get("ort_int8", {}).get("1")
        if latency is not None:
            ious = [r["highlight_iou"] for r in members]
            sd = statistics.stdev(ious) if len(ious) > 1 else 0.0
            size = members[0]["params"] / 1e6
            label = f"{model} ({size:.1f}M)"
            points.append((label, latency["median_ms"], statistics.fmean(ious), sd, size))
    plot_tradeoff(
        points,
        path,
        xlabel="onnxruntime int8 latency, batch 1, 256x256 (ms, this CPU)",
        ylabel="test nucleus IoU (mean +- sd over seeds)",
        title="founding grid: accuracy against int8 latency (marker area: parameters)",
    )


def tuning() -> Experiment:
    members = []
    for family, (config, overrides) in FAMILIES.items():
        for name in recipes_of(family):
            members.append(
                Member(
                    f"unet_{family}_{name}",
                    config,
                    {**budget(TUNING_STEPS), **overrides, **recipe(name), "seed": 0},
                )
            )
    return Experiment(
        name="founding_tuning",
        members=members,
        eval_split="validation",
        highlight_class="nucleus",
        curves=True,
        tables=tuning_tables,
    )


# "Extra seeds where the spread is large", decided before the seeds were seen: a model whose best
# validation nucleus IoU (what selection sees; never the test split) varies by a standard
# deviation above EXTRA_SEEDS_ABOVE over seeds 0-2 gets seeds 3 and 4, listed here by hand once
# its third seed has finished.
EXTRA_SEEDS_ABOVE = 0.01
EXTRA_SEEDS: dict[str, tuple[int, ...]] = {}


def grid() -> Experiment:
    members = []
    for seed in SEEDS + tuple(sorted({s for seeds in EXTRA_SEEDS.values() for s in seeds})):
        for name, family, config, overrides in GRID:
            if seed not in REPRODUCTION_ONLY.get(name, SEEDS) + EXTRA_SEEDS.get(name, ()):
                continue
            chosen = recipe(GRID_RECIPE[family]) if family else NESTED_UNET_RECIPE
            members.append(
                Member(
                    f"{name}_seed{seed}",
                    config,
                    {**budget(steps_of(name)), **overrides, **chosen, "seed": seed},
                )
            )
    return Experiment(
        name="founding_grid",
        members=members,
        eval_split="test",
        highlight_class="nucleus",
        curves=True,
        comparisons=COMPARISONS,
        tables=grid_tables,
    )


VARIANTS = {"tuning": tuning, "grid": grid}


def get_experiment(variant: str = "grid") -> Experiment:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    return VARIANTS[variant]()
