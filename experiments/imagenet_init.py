"""What ImageNet initialisation is worth on DSB 2018: U-Net on MobileNetV2 and on
EfficientNet-Lite0, each started from the ImageNet weights that registry packages ship and from
random weights, two seeds each, with U-Net on GhostNet-1.0 and on ResNet-34 (random, as no
ImageNet file of theirs can be reached) as reference rows, all at one budget.

    python -m segjax.imagenet_weights --out weights     # once: weights/*.safetensors
    python -m segjax.experiments.run experiments/imagenet_init.py --workdir runs/imagenet_init
    python -m segjax.experiments.report experiments/imagenet_init.py --workdir runs/imagenet_init \\
        --out experiments/imagenet_init
    python experiments/imagenet_init/curves.py --workdir runs/imagenet_init \\
        --out experiments/imagenet_init/curves.png

Budget: 1000 steps of global batch 8 on random 96x96 crops (about 17 epochs of the 464 training
images), AdamW 1e-3 with 100 warm-up steps then cosine decay, cross-entropy + Dice (the
``:dsb2018`` defaults), validation every 250 steps; the same recipe for ImageNet and random
initialisation, so the initialisation is the only difference. Inputs are normalised as each
encoder's ImageNet weights expect, for both initialisations (``configs/mobilenet_unet.py``,
``configs/efficientnet_lite_unet.py``; ImageNet statistics for GhostNet and ResNet).
"""

from segjax.experiments.spec import Experiment, Member
from segjax.models.weights.packaged import PACKAGED

SEEDS = (0, 1)
BUDGET = {
    "total_steps": 1000,
    "batch_size": 8,
    "data.image_size": (96, 96),
    "eval_every_steps": 250,
    "log_every_steps": 25,  # the training-loss curves
    "checkpoint_every_steps": 100,
}
# The converted files' digests (python -m segjax.imagenet_weights writes the same bytes each time).
CONVERTED_SHA256 = {
    "mobilenet_v2": "4e7dcf27a2418356821142e811f116024084d47d3fa59584ade9371d0b985daa",
    "efficientnet_lite0": "70c00cb9ebb4ebae4b6c2e9627b49e1448f5a80955c8c140f61a77921589bbd0",
}
MODELS = (
    ("mobilenetv2", "configs/mobilenet_unet.py:dsb2018", "mobilenet_v2"),
    ("efficientnetlite0", "configs/efficientnet_lite_unet.py:dsb2018", "efficientnet_lite0"),
)
REFERENCES = (
    ("ghostnet100", "configs/ghost_unet.py:dsb2018"),
    ("resnet34", "configs/resnet_unet.py:dsb2018"),
)


def imagenet(weights: str) -> dict:
    return {
        "model.pretrained": f"weights/{PACKAGED[weights].name}.safetensors",
        "model.pretrained_sha256": CONVERTED_SHA256[weights],
    }


def get_experiment() -> Experiment:
    members = []
    for seed in SEEDS:
        for short, config, weights in MODELS:
            common = {**BUDGET, "seed": seed}
            members += [
                Member(
                    f"unet_{short}_imagenet_seed{seed}", config, {**common, **imagenet(weights)}
                ),
                Member(f"unet_{short}_random_seed{seed}", config, common),
            ]
        for short, config in REFERENCES:
            overrides = {**BUDGET, "seed": seed, "model.encoder": short.replace("100", "_100")}
            members.append(Member(f"unet_{short}_random_seed{seed}", config, overrides))
    return Experiment(
        name="imagenet_init", members=members, eval_split="test", highlight_class="nucleus"
    )
