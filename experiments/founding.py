"""The founding question at a converged, tuned budget, on DSB 2018 (464 / 100 / 100 images).

Three experiments share one protocol (``PROTOCOL``), each a variant of this file:

    python -m segjax.imagenet_weights --out weights      # once: the two ImageNet files
    python -m segjax.experiments.run experiments/founding.py:tuning --workdir runs/founding_tuning
    python -m segjax.experiments.run experiments/founding.py:grid --workdir runs/founding_grid
    python -m segjax.experiments.run experiments/founding.py:reproduction \\
        --workdir runs/founding_reproduction

- ``tuning``: U-Net on each encoder family at ``TUNING_STEPS``, one seed, every recipe of
  ``RECIPES``; scored on the validation split only (the chosen recipe is its best validation
  nucleus IoU).
- ``grid``: every model of the founding question at ``GRID_STEPS`` with its encoder's chosen
  recipe (``CHOSEN``, read off the tuning table), seeds 0, 1, 2; checkpoint chosen on validation,
  the test split scored once.
- ``reproduction``: the paper U-Net++ in pytorch-nested-unet's recipe beside the grid's paper
  U-Net, for their published table.

Protocol: whole images resized to 96x96, for training and for scoring, as both published anchors
do (pytorch-nested-unet at 96x96, U-Bench at 256x256), so the numbers compare with theirs; on this
2-core CPU it also makes validation cheap enough to run a dozen times per member, which the
convergence criterion needs. Batch 8, the ``:dsb2018`` augmentation (flips, quarter turns, colour
jitter), cross-entropy + Dice, checkpoint of best validation nucleus IoU.
"""

from segjax.experiments.spec import Experiment, Member
from segjax.models.weights.packaged import PACKAGED

SEEDS = (0, 1, 2)
TUNING_STEPS = 600
GRID_STEPS = 1500
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

# The optimiser recipes the tuning compares: AdamW with cosine decay at three learning rates
# (5% linear warm-up, segjax's gradient clipping at norm 1), and U-Bench's SGD (lr 0.01,
# momentum 0.9, weight decay 1e-4, poly(0.9) decay to 0, no warm-up, no clipping).
RECIPES = {
    "adamw3e-4": {"optimizer.name": "adamw", "optimizer.learning_rate": 3e-4},
    "adamw1e-3": {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-3},
    "adamw3e-3": {"optimizer.name": "adamw", "optimizer.learning_rate": 3e-3},
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
    "ghostnet100": "adamw1e-3",
    "mobilenetv2": "adamw1e-3",
    "efficientnetlite0": "adamw1e-3",
}

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
GRID = (
    ("unet_resnet34", "resnet34", *FAMILIES["resnet34"]),
    ("unet_ghostnet100", "ghostnet100", *FAMILIES["ghostnet100"]),
    (
        "unet_ghostnet100_ghostdecoder",
        "ghostnet100",
        FAMILIES["ghostnet100"][0],
        {**FAMILIES["ghostnet100"][1], "model.decoder_block": "ghost"},
    ),
    ("unet_mobilenetv2", "mobilenetv2", *FAMILIES["mobilenetv2"]),
    ("unet_efficientnetlite0", "efficientnetlite0", *FAMILIES["efficientnetlite0"]),
    (
        "unetpp_resnet34",
        "resnet34",
        FAMILIES["resnet34"][0],
        {**FAMILIES["resnet34"][1], "model.arch": "unetpp"},
    ),
    (
        "unetpp_ghostnet100",
        "ghostnet100",
        FAMILIES["ghostnet100"][0],
        {**FAMILIES["ghostnet100"][1], "model.arch": "unetpp"},
    ),
    ("unet_paper", None, "configs/unet_paper.py:dsb2018", NESTED_UNET_PAPER),
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


def recipe(name: str) -> dict:
    overrides = dict(RECIPES[name])
    if name == "sgd":
        overrides["optimizer.warmup_steps"] = 0
    return overrides


def tuning() -> Experiment:
    members = []
    for family, (config, overrides) in FAMILIES.items():
        for name in RECIPES:
            members.append(
                Member(
                    f"unet_{family}_{name}",
                    config,
                    {**budget(TUNING_STEPS), **overrides, **recipe(name), "seed": 0},
                )
            )
    return Experiment(
        name="founding_tuning", members=members, eval_split="validation", highlight_class="nucleus"
    )


def grid() -> Experiment:
    members = []
    for seed in SEEDS:
        for name, family, config, overrides in GRID:
            chosen = recipe(CHOSEN[family]) if family else NESTED_UNET_RECIPE
            members.append(
                Member(
                    f"{name}_seed{seed}",
                    config,
                    {**budget(GRID_STEPS), **overrides, **chosen, "seed": seed},
                )
            )
    return Experiment(
        name="founding_grid", members=members, eval_split="test", highlight_class="nucleus"
    )


def reproduction() -> Experiment:
    overrides = {**budget(GRID_STEPS), **NESTED_UNET_PAPER, **NESTED_UNET_RECIPE}
    members = [
        Member(
            f"unetpp_paper_seed{seed}",
            "configs/unetpp_paper.py:dsb2018",
            {**overrides, "seed": seed},
        )
        for seed in SEEDS
    ]
    return Experiment(
        name="founding_reproduction", members=members, eval_split="test", highlight_class="nucleus"
    )


VARIANTS = {"tuning": tuning, "grid": grid, "reproduction": reproduction}


def get_experiment(variant: str = "grid") -> Experiment:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    return VARIANTS[variant]()
