"""The founding question: GhostNet vs ResNet encoders, U-Net vs U-Net++ decoders (with and
without deep supervision), a Ghost decoder, and the paper U-Net / U-Net++, all trained the same
way on DSB 2018 nuclei and evaluated on its full-size test images.

    python -m segjax.experiments.run experiments/backbones.py --workdir runs/backbones \\
        [--set data.path=../shared/data/dsb2018_nuclei]

The data path is the ``:dsb2018`` variant's default, relative to the repository root.
"""

from segjax.experiments.spec import Experiment, Member

# One budget for every member, sized so the whole sweep takes about two hours on a 2-core CPU
# (training steps of batch 8 at 128x128, measured with benchmarks/speed.py, take from 0.61 s for
# U-Net/ResNet-18 to 9.4 s for the paper U-Net++): 300 steps of
# global batch 8, random 96x96 crops, AdamW 1e-3 with 30 warmup steps then cosine decay,
# cross-entropy + Dice (the :dsb2018 defaults), one seed.
BUDGET = {
    "seed": 0,
    "total_steps": 300,
    "batch_size": 8,
    "data.image_size": (96, 96),
    "optimizer.warmup_steps": 30,
    "eval_every_steps": 300,  # validation once, at the end
    "checkpoint_every_steps": 50,  # an interrupted member loses at most 50 steps
}


def get_experiment() -> Experiment:
    members = []
    for encoder, config in (
        ("resnet18", "resnet"),
        ("resnet34", "resnet"),
        ("ghostnet_100", "ghost"),
    ):
        short = encoder.replace("ghostnet_100", "ghostnet100")
        model = {"model.encoder": encoder}
        members += [
            Member(f"unet_{short}", f"configs/{config}_unet.py:dsb2018", {**BUDGET, **model}),
            Member(f"unetpp_{short}", f"configs/{config}_unetpp.py:dsb2018", {**BUDGET, **model}),
            Member(
                f"unetpp_{short}_ds",
                f"configs/{config}_unetpp.py:dsb2018",
                {**BUDGET, **model, "model.deep_supervision": True},
            ),
        ]
    members += [
        Member(
            "unet_ghostnet100_ghostdecoder",
            "configs/ghost_unet.py:dsb2018",
            {**BUDGET, "model.decoder_block": "ghost"},
        ),
        Member("unet_paper", "configs/unet_paper.py:dsb2018", dict(BUDGET)),
        Member("unetpp_paper", "configs/unetpp_paper.py:dsb2018", dict(BUDGET)),
    ]
    # DSB 2018's classes are (background, nucleus): the report gives the nucleus IoU a column.
    return Experiment(
        name="backbones", members=members, eval_split="test", highlight_class="nucleus"
    )
