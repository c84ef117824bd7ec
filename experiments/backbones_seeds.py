"""How much of a difference in experiments/backbones.py is the seed? Four of its models trained
again, exactly as there, with seeds 0, 1 and 2: the spread of three seeds says which gaps in that
table are larger than run-to-run noise. Seed 0 is the backbones run itself, trained again: its
results must equal the backbones table's (a fixed seed gives the same run).

    python -m segjax.experiments.run experiments/backbones_seeds.py --workdir runs/backbones_seeds
"""

import os

from segjax.experiments.spec import Experiment, Member, load_experiment

MODELS = ("unet_resnet18", "unet_resnet34", "unetpp_resnet34", "unet_ghostnet100")
SEEDS = (1, 2, 0)  # seed 0 last: it re-checks a result we already have


def get_experiment() -> Experiment:
    backbones = load_experiment(os.path.join(os.path.dirname(__file__), "backbones.py"))
    base = {member.name: member for member in backbones.members}
    members = [
        Member(
            f"{name}_seed{seed}",
            base[name].config,
            {**base[name].overrides, "seed": seed},
        )
        for seed in SEEDS
        for name in MODELS
    ]
    # DSB 2018's classes are (background, nucleus): the report gives the nucleus IoU a column.
    return Experiment(
        name="backbones_seeds", members=members, eval_split="test", highlight_class="nucleus"
    )
