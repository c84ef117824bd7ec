"""The founding question's second part at review standard: does U-Net++'s nested pyramid help
Mask R-CNN find DSB 2018 nuclei once compute, budget and seeds are equal?

    python -m segjax.experiments.run experiments/nested_pyramid.py:tuning \\
        --workdir runs/nested_tuning
    python experiments/nested_pyramid/threshold_choice.py --workdirs <the chosen Mask R-CNN runs>
    python experiments/instances/splitter_choice.py --workdirs <the chosen U-Net run>
    python -m segjax.experiments.run experiments/nested_pyramid.py:grid --workdir runs/nested_grid
    python -m segjax.experiments.report experiments/nested_pyramid.py:grid \\
        --workdir runs/nested_grid --out experiments/nested_pyramid/grid

On a lent GPU: ``experiments/nested_pyramid/device.sh`` (its header says what it carries).

- ``tuning``: every model at ``TUNING_STEPS``, seed 0, AdamW at three learning rates per model
  (``RATES``), scored on the validation split only (``tuning.md``).
- ``grid``: every model at its chosen rate (``CHOSEN``), its Mask R-CNN thresholds and its
  U-Net's splitting chosen on validation, seeds 0-2, ``GRID_STEPS`` (longer for a model that
  misses the convergence criterion), the test split scored once.
- ``ready``: the grid's members of the models whose choices are all made, so that they can
  train (into the grid's workdir) before the others' tuning has run.

Models (``MODELS``): Mask R-CNN on ResNet-18 with the FPN, the nested pyramid ('unetpp') and the
FPN of equal compute ('fpn_repeated': four top-down + bottom-up passes of U-Net++ nodes at the
same width, so the heads are identical and only the skips differ); Mask R-CNN on GhostNet-1.0
with the FPN and the nested pyramid; the semantic U-Net on ResNet-18 whose foreground is split
into objects. Protocol (``PROTOCOL``): batch 8 of random 128x128 crops with the ``:dsb2018``
augmentation (scale 0.5-1.5, flips, quarter turns, colour jitter), float32, validation on the
full-size images ``EVALUATIONS`` times per member, checkpoint of best validation DSB score (the
U-Net: of best validation nucleus IoU, the score it is trained for), cosine decay after a 5%
warm-up, gradient clipping at norm 1, no pretrained weights.
"""

import statistics

from segjax.experiments.report_parts import cell, median_measured
from segjax.experiments.seeds import SEED_SUFFIX
from segjax.experiments.spec import Experiment, Member

SEEDS = (0, 1, 2)
TUNING_STEPS = 2000
GRID_STEPS = 6000
# A model any member of which misses the criterion at GRID_STEPS trains this many, every seed:
# 1.5x, as the founding grid's next budgets were; the shorter runs' records stay in
# experiments/nested_pyramid/grid_<steps>/. At GRID_STEPS the U-Net's seed 0 gained 0.00503 over
# its last quarter (validation nucleus IoU 0.8713 at step 4200 -> 0.8764 at 4800).
LONG_BUDGETS: dict[str, int] = {"unet_resnet18": 9000}
EVALUATIONS = 10

PROTOCOL = {
    "batch_size": 8,
    "data.image_size": (128, 128),
    "log_every_steps": 50,
    "keep_checkpoints": 1,  # the latest, and the best on validation
    "optimizer.name": "adamw",
}
# The U-Net trains on the same batches: the detection targets are derived but unused.
SAME_BATCHES = {"data.max_instances": 128, "data.min_instance_area": 4}

# Model -> (config, overrides). Names carry the encoder last, as experiments/instances.py's do.
MODELS = {
    "maskrcnn_fpn_resnet18": ("configs/maskrcnn_fpn.py:dsb2018", {"model.encoder": "resnet18"}),
    "maskrcnn_unetpp_resnet18": (
        "configs/maskrcnn_unetpp.py:dsb2018",
        {"model.encoder": "resnet18"},
    ),
    "maskrcnn_fpnrepeated_resnet18": (
        "configs/maskrcnn_fpn.py:dsb2018",
        {"model.encoder": "resnet18", "model.pyramid": "fpn_repeated"},
    ),
    "maskrcnn_fpn_ghostnet100": (
        "configs/maskrcnn_fpn.py:dsb2018",
        {"model.encoder": "ghostnet_100"},
    ),
    "maskrcnn_unetpp_ghostnet100": (
        "configs/maskrcnn_unetpp.py:dsb2018",
        {"model.encoder": "ghostnet_100"},
    ),
    "unet_resnet18": (
        "configs/resnet_unet.py:dsb2018",
        {"model.encoder": "resnet18", "best_metric": "iou/nucleus", **SAME_BATCHES},
    ),
}

# AdamW rates per model: three around the founding study's findings (ResNet-34's U-Net best at
# 1e-3, GhostNet-1.0's at 3e-3 to 1e-2). A model whose best is an end of its range gets the next
# rate beyond it (EXTENDED), so every chosen rate has a lower-scoring rate on both sides.
RATES = {name: (1e-3, 3e-3, 1e-2) if "ghostnet" in name else (3e-4, 1e-3, 3e-3) for name in MODELS}
# The U-Net's best of (3e-4, 1e-3, 3e-3) was 3e-4 (validation DSB 0.4281 against 0.4224, 0.4221).
EXTENDED: dict[str, tuple[float, ...]] = {"unet_resnet18": (1e-4,)}

# Filled in from tuning.md once the tuning has run (the report checks CHOSEN against it):
# model -> AdamW rate; Mask R-CNN model -> (detection NMS IoU threshold, score threshold) from
# threshold_choice.py; the U-Net's splitting (method, watershed seed height, least object area)
# from experiments/instances/splitter_choice.py, both on the validation split.
# Mask R-CNN/FPN/ResNet-18 (tuning.md): 0.4643 / 0.5064 / 0.2293 at 3e-4 / 1e-3 / 3e-3.
# Nested pyramid/ResNet-18: 0.4849 / 0.5195 / 0.5017; at each rate's own best thresholds
# (thresholds_validation.md) 0.5342 / 0.5564 / 0.5400, so 1e-3 either way.
CHOSEN: dict[str, float] = {
    "unet_resnet18": 3e-4,
    "maskrcnn_fpn_resnet18": 1e-3,
    "maskrcnn_unetpp_resnet18": 1e-3,
}
# From the chosen runs' studies (tuning/thresholds.md). FPN/ResNet-18: NMS 0.3, score 0.9,
# 0.5502 (0.5064 at the defaults 0.5 / 0.5); score 0.95 scores about 0.01 under 0.9 at every
# NMS. Nested/ResNet-18: NMS 0.2, score 0.8, 0.5564 (0.5195 at the defaults); NMS 0.3 at 0.8
# within 0.0002, score 0.95 0.009 to 0.015 under 0.8 at every NMS.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "maskrcnn_fpn_resnet18": (0.3, 0.9),
    "maskrcnn_unetpp_resnet18": (0.2, 0.8),
}
# splitter_choice.md (validation, the 3e-4 run): components with objects of 16+ pixels, 0.4563,
# above the best watershed (seed height 16, also 16+ pixels), 0.4281, which is reported beside it.
SPLITTING: tuple[str, float, int] | None = ("components", 16.0, 16)


def comparisons(method: str) -> tuple[tuple[str, str], ...]:
    """The grid's paired tests over the 100 test images' DSB scores (seeds averaged per image):
    the nested pyramid against both FPNs, on both encoders where built, and the Mask R-CNNs on
    ResNet-18 against the U-Net split by ``method``."""
    unet = f"unet_resnet18_{method}"
    return (
        ("maskrcnn_unetpp_resnet18", "maskrcnn_fpn_resnet18"),
        ("maskrcnn_unetpp_resnet18", "maskrcnn_fpnrepeated_resnet18"),
        ("maskrcnn_unetpp_ghostnet100", "maskrcnn_fpn_ghostnet100"),
        ("maskrcnn_unetpp_resnet18", unet),
        ("maskrcnn_fpn_resnet18", unet),
    )


def rate_name(rate: float) -> str:
    return f"adamw{rate:.0e}".replace("e-0", "e-")


def rates_of(model: str) -> tuple[float, ...]:
    return RATES[model] + EXTENDED.get(model, ())


def budget(steps: int) -> dict:
    every = steps // EVALUATIONS
    return {
        **PROTOCOL,
        "total_steps": steps,
        "eval_every_steps": every,
        "checkpoint_every_steps": every,
        "optimizer.warmup_steps": steps // 20,
    }


def tuning_tables(rows: list[dict], workdir: str, out: str) -> dict[str, str]:
    """``tuning.md``: each model's validation score at each rate (Mask R-CNN: DSB score; the
    U-Net: its watershed objects' DSB score), the best rate, and whether ``CHOSEN`` agrees."""
    del workdir, out
    scores = {row["member"]: row["dsb_score"] for row in rows if row["method"] != "components"}
    columns = sorted({rate for model in MODELS for rate in rates_of(model)})
    lines = [
        "# nested_pyramid tuning: the learning rate per model",
        "",
        f"{TUNING_STEPS} steps, seed 0: validation DSB score (objects scoring at least 0.5; the "
        "U-Net's foreground split by the watershed) of the checkpoint of best validation score. "
        "The test split is not used. '-': not finished; blank: not tried.",
        "",
        "| model | " + " | ".join(rate_name(r) for r in columns) + " | best | CHOSEN |",
        "|---" + "|---:" * len(columns) + "|---|---|",
    ]
    for model in MODELS:
        values = {r: scores.get(f"{model}_{rate_name(r)}") for r in rates_of(model)}
        done = {r: v for r, v in values.items() if v is not None}
        best = max(done, key=done.get) if done and len(done) == len(values) else None
        cells = []
        for rate in columns:
            value = values.get(rate, "")
            if value is None:
                value = "-"
            elif value != "":
                value = f"**{value:.4f}**" if rate == best else f"{value:.4f}"
            cells.append(value)
        chosen = CHOSEN.get(model)
        verdict = "-" if chosen is None else rate_name(chosen)
        if chosen is not None and best is not None:
            verdict += " agrees" if chosen == best else " DIFFERS"
        edge = best is not None and best in (min(values), max(values))
        lines.append(
            f"| {model} | " + " | ".join(cells) + f" | {rate_name(best) if best else '-'}"
            f"{' (at an end: extend)' if edge else ''} | {verdict} |"
        )
    return {"tuning.md": "\n".join(lines) + "\n"}


def seed_of(member: str) -> str:
    return SEED_SUFFIX.search(member).group(0).removeprefix("_seed")


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.fmean(values):.4f} +- {statistics.stdev(values):.4f}"


def grid_tables(rows: list[dict], workdir: str, out: str) -> dict[str, str]:
    """``answer.md``: per model over its seeds, the test scores (mean +- sample sd) and the
    cost (parameters, MACs, encoder+pyramid MACs, training images/s, latency, post-processing)."""
    del workdir, out
    models: dict[str, list[dict]] = {}
    for row in rows:
        models.setdefault(SEED_SUFFIX.sub("", row["name"]), []).append(row)
    lines = [
        "# nested_pyramid grid: the answer table",
        "",
        "Test split (100 full-size images), checkpoint of best validation score; mean +- sample "
        "sd over seeds. Costs from shapes (MACs at 256x256) and the runner's speed phase.",
        "",
        "| model | seeds | DSB score | mask AP | AP50 | AP75 | params | GMACs | "
        "encoder+pyramid GMACs | train img/s | infer ms b1 | post ms/image |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, members in models.items():
        first = members[0]

        def column(key, members=members):
            return spread([r[key] for r in members])

        lines.append(
            f"| {model} | {','.join(seed_of(r['member']) for r in members)} "
            f"| {column('dsb_score')} | {column('mask_ap')} | {column('mask_ap50')} "
            f"| {column('mask_ap75')} | {first['params']:,} | {first['gmacs']:.2f} "
            f"| {first['trunk_gmacs']:.2f} "
            f"| {cell(median_measured(members, 'train_img_per_sec'), '{:.1f}')} "
            f"| {cell(median_measured(members, 'inference_ms'), '{:.1f}')} "
            f"| {cell(median_measured(members, 'post_ms'), '{:.1f}')} |"
        )
    return {"answer.md": "\n".join(lines) + "\n"}


def tuning() -> Experiment:
    members = []
    for model, (config, overrides) in MODELS.items():
        # The U-Net's objects as experiments/instances/ chose on validation (splitter_choice.md).
        flags = ("--instances=watershed,components", "--seed_height=16", "--min_area=16")
        flags = flags if model.startswith("unet") else ()
        for rate in rates_of(model):
            members.append(
                Member(
                    f"{model}_{rate_name(rate)}",
                    config,
                    {
                        **budget(TUNING_STEPS),
                        **overrides,
                        "optimizer.learning_rate": rate,
                        "seed": 0,
                    },
                    eval_flags=flags,
                )
            )
    return Experiment(
        name="nested_pyramid_tuning",
        members=members,
        eval_split="validation",
        kind="instances",
        curves=True,
        tables=tuning_tables,
    )


def ready(model: str, chosen: dict, thresholds: dict, splitting: tuple | None) -> bool:
    """Whether the tuning has made every choice ``model``'s grid members need."""
    if model not in chosen:
        return False
    return model in thresholds if model.startswith("mask") else splitting is not None


def grid_members(
    chosen: dict, thresholds: dict, splitting: tuple | None, ready_only: bool = False
) -> list[Member]:
    """The grid's members, every seed 0 before any seed 1; errors name what tuning has not yet
    chosen. ``ready_only``: only the models whose choices are made (the ``ready`` variant)."""
    missing = [m for m in MODELS if m not in chosen]
    missing += [f"{m} (thresholds)" for m in MODELS if m.startswith("mask") and m not in thresholds]
    missing += [] if splitting else ["the U-Net's splitting (SPLITTING)"]
    models = [m for m in MODELS if ready(m, chosen, thresholds, splitting)]
    if (missing and not ready_only) or not models:
        raise ValueError(
            "the grid needs the tuning's choices first (run the tuning variant, "
            f"threshold_choice.py and splitter_choice.py); not chosen yet: {', '.join(missing)}"
        )
    members = []
    for seed in SEEDS:
        for model in models:
            config, overrides = MODELS[model]
            if model.startswith("mask"):
                nms, score = thresholds[model]
                extra = {"model.detection_nms_threshold": nms}
                flags = (f"--score_threshold={score:g}",)
            else:  # the chosen splitting's row first, the other one beside it
                method, height, area = splitting
                other = "components" if method == "watershed" else "watershed"
                extra = {}
                flags = (f"--instances={method},{other}", f"--seed_height={height:g}")
                flags += (f"--min_area={area}",)
            members.append(
                Member(
                    f"{model}_seed{seed}",
                    config,
                    {
                        **budget(LONG_BUDGETS.get(model, GRID_STEPS)),
                        **overrides,
                        **extra,
                        "optimizer.learning_rate": chosen[model],
                        "seed": seed,
                    },
                    eval_flags=flags,
                )
            )
    return members


def grid() -> Experiment:
    return Experiment(
        name="nested_pyramid_grid",
        members=grid_members(CHOSEN, THRESHOLDS, SPLITTING),
        eval_split="test",
        kind="instances",
        curves=True,
        comparisons=comparisons(SPLITTING[0]),
        tables=grid_tables,
    )


def grid_ready() -> Experiment:
    """The grid's members whose model the tuning has finished choosing for, the same members
    (names, configs, flags) as ``grid``'s: they can train, into the grid's workdir, while other
    models' tuning waits for a GPU. Its report has no paired tests; the grid's report has."""
    return Experiment(
        name="nested_pyramid_grid",
        members=grid_members(CHOSEN, THRESHOLDS, SPLITTING, ready_only=True),
        eval_split="test",
        kind="instances",
        curves=True,
        tables=grid_tables,
    )


VARIANTS = {"tuning": tuning, "grid": grid, "ready": grid_ready}


def get_experiment(variant: str = "grid") -> Experiment:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    return VARIANTS[variant]()
