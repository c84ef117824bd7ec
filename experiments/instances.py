"""Instance segmentation of DSB 2018 nuclei: Mask R-CNN with a plain FPN, Mask R-CNN with a U-Net++
nested pyramid (Mask R-CNN++), and a U-Net whose foreground a seeded watershed splits into nuclei
(connected components too, in the same evaluation; the splitting chosen on the validation
split by ``experiments/instances/splitter_choice.py``), each on ResNet-18 and GhostNet-1.0, trained
the same way and scored on the full-size test images with the DSB 2018 metric and COCO mask AP.

    python -m segjax.experiments.run experiments/instances.py --workdir runs/instances
    python -m segjax.experiments.report experiments/instances.py --workdir runs/instances \\
        --out experiments/instances
"""

from segjax.experiments.spec import Experiment, Member

# One budget for every member, sized so that the six fit in about an hour and a half on the
# 2-core CPU (Mask R-CNN steps of batch 8 at 128x128 take 2.0 to 2.6 s there, U-Net's about
# 0.5 s): 400 steps of global batch 8, random 128x128 crops (scale 0.5-1.5, flips, quarter
# turns), AdamW 1e-3 with 40 warm-up steps then cosine decay, one seed, no pretrained weights.
BUDGET = {
    "seed": 0,
    "total_steps": 400,
    "batch_size": 8,
    "data.image_size": (128, 128),
    "optimizer.warmup_steps": 40,
    "eval_every_steps": 400,  # validation once, at the end
    "checkpoint_every_steps": 50,  # an interrupted member loses at most 50 steps
}
# The U-Net trains on the same batches: the detection targets are derived but unused.
SAME_BATCHES = {"data.max_instances": 128, "data.min_instance_area": 4}
# How the U-Net's foreground becomes objects, chosen on the validation split for both encoders
# by experiments/instances/splitter_choice.py (splitter_choice.md): seed height 16, objects of
# at least 16 pixels. Connected components are scored in the same evaluation.
SPLITTING = ("--instances=watershed,components", "--seed_height=16", "--min_area=16")


def get_experiment() -> Experiment:
    members = []
    for encoder, short in (("resnet18", "resnet18"), ("ghostnet_100", "ghostnet100")):
        model = {"model.encoder": encoder}
        for pyramid in ("fpn", "unetpp"):
            members.append(
                Member(
                    f"maskrcnn_{pyramid}_{short}",
                    f"configs/maskrcnn_{pyramid}.py:dsb2018",
                    {**BUDGET, **model},
                )
            )
        members.append(
            Member(
                f"unet_{short}_watershed",
                "configs/resnet_unet.py:dsb2018",
                {**BUDGET, **SAME_BATCHES, **model},
                eval_flags=SPLITTING,
            )
        )
    return Experiment(name="instances", members=members, eval_split="test", kind="instances")
