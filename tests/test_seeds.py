"""Seed spread: runs that differ only in their seed are summarised together."""

import pytest

from segjax.experiments.seeds import group_key, seed_groups, seed_table


def row(name, config, overrides, miou):
    return {
        "name": name,
        "group": group_key(config, overrides),
        "seed": overrides.get("seed", 42),
        "miou": miou,
        "image_miou": miou - 0.01,
        "dice": miou + 0.05,
        "image_dice": miou + 0.04,
        "highlight_iou": miou - 0.1,
    }


def test_only_runs_differing_in_seed_are_grouped():
    base = {"total_steps": 300, "model.encoder": "resnet18"}
    rows = [
        row("unet_seed1", "configs/a.py", {**base, "seed": 1}, 0.80),
        row("other", "configs/a.py", {**base, "model.encoder": "resnet34", "seed": 1}, 0.50),
        row("unet_seed0", "configs/a.py", {**base, "seed": 0}, 0.90),
        row("unet_seed2", "configs/a.py", {"seed": 2, **base}, 0.70),  # key order is irrelevant
        row("b_seed0", "configs/b.py", {**base, "seed": 0}, 0.60),  # another config file
    ]
    (summary,) = seed_groups(rows)
    assert summary["name"] == "unet" and summary["seeds"] == [0, 1, 2]
    assert summary["miou"]["mean"] == pytest.approx(0.80)
    assert summary["miou"]["sd"] == pytest.approx(0.10)  # sample sd of 0.7, 0.8, 0.9
    assert (summary["miou"]["min"], summary["miou"]["max"]) == (0.70, 0.90)
    assert summary["dice"]["mean"] == pytest.approx(0.85)
    lines = seed_table([summary])
    assert "| unet | 0,1,2 | 0.8000 +- 0.1000 [0.7000, 0.9000] | 0.7900 +- 0.1000" in "\n".join(
        lines
    )
    assert "IoU (set) |" not in "\n".join(lines).replace("mIoU", "")  # no class, no column
    lines = "\n".join(seed_table([summary], "nucleus"))
    assert "test nucleus IoU (set)" in lines and "| 0.7000 +- 0.1000 [0.6000, 0.8000] |" in lines
    lines = "\n".join(seed_table([summary], "nucleus", "validation"))  # named after the split
    assert "validation mIoU (set)" in lines and "test" not in lines


def test_no_group_without_repeated_runs():
    rows = [
        row("a", "configs/a.py", {"seed": 0}, 0.8),
        row("b", "configs/a.py", {"seed": 0, "total_steps": 5}, 0.7),
    ]
    assert seed_groups(rows) == []
