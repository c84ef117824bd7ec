"""What ImageNet weights add at the founding grid's converged budget: U-Net/MobileNetV2 trained
exactly as ``experiments/founding.py:grid`` trains it (same recipe, AdamW 3e-3, same 4500 steps,
same data and evaluation), but from random weights, against the grid's own ImageNet-initialised
members. The grid compares ImageNet MobileNetV2 / EfficientNet-Lite0 with random GhostNet and
ResNet-34, which mixes the encoder with its initialisation; ``experiments/imagenet_init/``
separates them, but at 1000 steps, where random weights are far from converged.

    W=runs/founding_init; mkdir -p $W
    cp -r experiments/founding/grid/members/unet_mobilenetv2_seed* $W/
    python -m segjax.experiments.run experiments/founding_init.py --workdir $W --nospeed
    python -m segjax.experiments.report experiments/founding_init.py --workdir $W --out OUT

Its records, tables and findings: ``experiments/founding_init/`` (README there).

The grid's members are copied in, not trained again (the runner skips finished members): the
paired test compares the random member with the very ImageNet runs the grid reports. The recipe
is the one tuned with ImageNet weights, so the difference is the initialisation's alone, not
what a recipe tuned for random weights could recover.
"""

import os

from segjax.experiments.spec import Experiment, Member, load_experiment

MODEL = "unet_mobilenetv2"
RANDOM_SEEDS = (0,)  # one seed first: about an hour of the 2-core CPU
INIT_KEYS = ("model.pretrained", "model.pretrained_sha256")


def get_experiment() -> Experiment:
    grid = load_experiment(os.path.join(os.path.dirname(__file__), "founding.py") + ":grid")
    imagenet = [m for m in grid.members if m.name.startswith(f"{MODEL}_seed")]
    template = imagenet[0].overrides
    missing = [key for key in INIT_KEYS if key not in template]
    if missing:
        raise ValueError(f"{MODEL} in founding.py:grid has no {missing}: is it still ImageNet?")
    random_overrides = {k: v for k, v in template.items() if k not in INIT_KEYS}
    randoms = [
        Member(f"{MODEL}_random_seed{seed}", imagenet[0].config, {**random_overrides, "seed": seed})
        for seed in RANDOM_SEEDS
    ]
    return Experiment(
        name="founding_init",
        members=imagenet + randoms,
        eval_split="test",
        highlight_class="nucleus",
        curves=True,
        comparisons=((MODEL, f"{MODEL}_random"),),
    )
