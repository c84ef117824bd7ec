"""experiments/nested_pyramid.py: its members, the grid's refusal before the tuning has chosen,
the flags that carry the validation choices to the test evaluation, the tuning table, and the
device script on this CPU."""

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from segjax.experiments.spec import load_experiment, load_module
from tests.cli_utils import ROOT, cpu_env

PATH = "experiments/nested_pyramid.py"


@pytest.fixture(scope="module")
def module():
    return load_module(PATH, "nested_pyramid_under_test")


def test_tuning_has_three_rates_per_model_on_validation(module):
    experiment = load_experiment(f"{PATH}:tuning")
    assert experiment.kind == "instances" and experiment.eval_split == "validation"
    names = [m.name for m in experiment.members]
    assert len(names) == 3 * len(module.MODELS) + sum(map(len, module.EXTENDED.values()))
    assert all(names.count(f"{m}_{module.rate_name(r)}") == 1 for m in module.MODELS
               for r in module.RATES[m])  # fmt: skip
    assert "maskrcnn_fpnrepeated_resnet18_adamw1e-3" in names
    assert "maskrcnn_unetpp_ghostnet100_adamw1e-2" in names
    member = {m.name: m for m in experiment.members}["maskrcnn_fpnrepeated_resnet18_adamw3e-4"]
    assert member.overrides["model.pyramid"] == "fpn_repeated"
    assert member.overrides["optimizer.learning_rate"] == 3e-4
    steps = member.overrides["total_steps"]
    assert steps // member.overrides["eval_every_steps"] >= 8  # the convergence check's passes
    unet = {m.name: m for m in experiment.members}["unet_resnet18_adamw1e-3"]
    assert unet.overrides["best_metric"] == "iou/nucleus"
    assert unet.eval_flags[0] == "--instances=watershed,components"


def test_grid_refuses_before_the_choices_are_made(module, monkeypatch):
    for name, empty in (("CHOSEN", {}), ("THRESHOLDS", {}), ("SPLITTING", None)):
        monkeypatch.setattr(module, name, empty)
    with pytest.raises(ValueError, match="not chosen yet: maskrcnn_fpn_resnet18, .*SPLITTING"):
        module.get_experiment("grid")
    monkeypatch.setattr(module, "CHOSEN", {model: 1e-3 for model in module.MODELS})
    monkeypatch.setattr(module, "SPLITTING", ("watershed", 16.0, 16))
    with pytest.raises(ValueError, match=r"not chosen yet: maskrcnn_fpn_resnet18 \(thresholds\)"):
        module.get_experiment("grid")


def test_grid_members_carry_the_validation_choices(module):
    chosen = {model: 1e-3 for model in module.MODELS}
    thresholds = {m: (0.4, 0.6) for m in module.MODELS if m.startswith("mask")}
    members = module.grid_members(chosen, thresholds, ("components", 16.0, 8))
    assert len(members) == 3 * len(module.MODELS)
    assert [m.name for m in members[:6]] == [f"{m}_seed0" for m in module.MODELS]
    by_name = {m.name: m for m in members}
    nested = by_name["maskrcnn_unetpp_resnet18_seed2"]
    assert nested.overrides["model.detection_nms_threshold"] == 0.4
    assert nested.overrides["seed"] == 2
    assert nested.eval_flags == ("--score_threshold=0.6",)
    unet = by_name["unet_resnet18_seed1"]
    assert unet.eval_flags == (
        "--instances=components,watershed",
        "--seed_height=16",
        "--min_area=8",
    )
    assert ("maskrcnn_unetpp_resnet18", "unet_resnet18_components") in module.comparisons(
        "components"
    )


def test_ready_variant_is_the_grids_members_whose_choices_are_made(module, monkeypatch):
    """Only the U-Net chosen: its three seeds, the very members (names, overrides, flags) that
    the full grid will have; nothing chosen at all is refused as the grid is."""
    monkeypatch.setattr(module, "CHOSEN", {"unet_resnet18": 1e-3})
    monkeypatch.setattr(module, "SPLITTING", ("watershed", 16.0, 16))
    members = module.get_experiment("ready").members
    assert [m.name for m in members] == [f"unet_resnet18_seed{s}" for s in module.SEEDS]
    chosen = {model: 1e-3 for model in module.MODELS}
    thresholds = {m: (0.4, 0.6) for m in module.MODELS if m.startswith("mask")}
    full = {m.name: m for m in module.grid_members(chosen, thresholds, module.SPLITTING)}
    assert all(m == full[m.name] for m in members)
    with pytest.raises(ValueError, match="not chosen yet: maskrcnn_fpn_resnet18"):
        module.get_experiment("grid")
    monkeypatch.setattr(module, "CHOSEN", {})
    with pytest.raises(ValueError, match="not chosen yet"):
        module.get_experiment("ready")


def test_tuning_table_marks_the_best_rate_and_checks_chosen(module, monkeypatch):
    monkeypatch.setattr(module, "EXTENDED", {})  # the rates below are RATES' only
    rows = []
    for model, rates in module.RATES.items():
        for index, rate in enumerate(rates):
            member = f"{model}_{module.rate_name(rate)}"
            score = 0.3 + 0.1 * (index == 1)  # the middle rate wins
            rows.append({"member": member, "method": "detection", "dsb_score": score})
    rows.append({"member": "unet_resnet18_adamw1e-3", "method": "components", "dsb_score": 0.9})
    monkeypatch.setattr(module, "CHOSEN", {"maskrcnn_fpn_resnet18": 3e-3})
    table = module.tuning_tables(rows, "", "")["tuning.md"]
    line = next(li for li in table.splitlines() if li.startswith("| maskrcnn_fpn_resnet18 |"))
    assert "**0.4000**" in line and "| adamw1e-3 | adamw3e-3 DIFFERS |" in line
    unet = next(li for li in table.splitlines() if li.startswith("| unet_resnet18 |"))
    assert "**0.4000**" in unet and "0.9" not in unet  # the components row is not the choice
    rows = [r for r in rows if not r["member"].startswith("maskrcnn_fpn_resnet18_adamw3e-4")]
    table = module.tuning_tables(rows, "", "")["tuning.md"]
    line = next(li for li in table.splitlines() if li.startswith("| maskrcnn_fpn_resnet18 |"))
    assert "| - |" in line and "**" not in line  # unfinished: no best yet


def test_model_table_sets_the_equal_compute_fpn_beside_the_nested_pyramid():
    table = load_module("experiments/nested_pyramid/model_table.py", "model_table").table()
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines()[2:]}
    assert set(rows) == set(load_module(PATH, "nested_pyramid_names").MODELS)
    assert 0.9 <= float(rows["maskrcnn_fpnrepeated_resnet18"][5]) <= 1.1
    assert float(rows["maskrcnn_fpn_resnet18"][5]) < 0.5
    assert rows["maskrcnn_unetpp_ghostnet100"][5].strip() == "1.000"


def _nuclei_folder(root, count=10, size=144):
    """A DSB-like folder from the synthetic shapes: binary masks, instance maps, splits.json."""
    from PIL import Image

    from segjax.data.shapes import generate_example

    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True)
    stems = [f"n{index:02d}" for index in range(count)]
    for index, stem in enumerate(stems):
        image, mask, instances = generate_example(0, "train", index, size)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(
            root / "masks" / f"{stem}.png"
        )
        Image.fromarray(instances.astype(np.uint16)).save(root / "instances" / f"{stem}.png")
    splits = {"train": stems[:6], "validation": stems[6:8], "test": stems[8:]}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def test_threshold_table_flags_a_best_setting_at_an_end_of_the_studied_range():
    """A choice at an end of the grid may have a better value beyond it (the second tuning run
    was best at the then-last score threshold), so the table says to widen the range first."""
    choice = load_module("experiments/nested_pyramid/threshold_choice.py", "threshold_choice")
    grid = [(n, s) for n in (0.1, 0.2, 0.3) for s in (0.5, 0.7, 0.9)]
    peaks = {"inner": (0.2, 0.7), "score_end": (0.2, 0.9), "corner": (0.1, 0.9)}
    keys = dict(mask_ap=0.5, mask_ap50=0.8, objects=40.0, true_objects=45.0)
    rows = [
        {"run": run, "nms": n, "score_threshold": s, "dsb_score": 1 - abs(n - a) - abs(s - b)}
        | keys
        for run, (a, b) in peaks.items()
        for n, s in grid
    ]
    lines = {line.split(":")[0]: line for line in choice.table(rows, "validation").splitlines()
             if line.startswith("- ")}  # fmt: skip
    assert "AT AN END" not in lines["- inner"] and "`(0.2, 0.7)`" in lines["- inner"]
    assert lines["- score_end"].endswith("AT AN END of the studied --scores 0.9: widen it first")
    assert "studied --nms 0.1, --scores 0.9:" in lines["- corner"]
    single = [dict(r, run="one_nms") for r in rows if r["run"] == "inner" and r["nms"] == 0.2]
    assert "AT AN END of the studied --scores" not in choice.table(single, "validation")  # 0.7


@pytest.mark.slow
def test_device_script_trains_what_has_no_record_and_packs_it(tfds_dir, tmp_path):
    """experiments/nested_pyramid/device.sh as a lent machine runs it, on this CPU at 4 steps:
    a U-Net and a Mask R-CNN trained and their records packed, the Mask R-CNN's with the
    threshold study that needs its checkpoint (which does not travel back); those records then
    committed (PREVIOUS), the next loan trains only the members without one and, with SPEED=1,
    times one copied in against its own copy of the data."""
    data = _nuclei_folder(tmp_path / "nuclei")
    member, detector = "unet_resnet18_adamw1e-3", "maskrcnn_fpn_resnet18_adamw3e-4"
    tiny = (
        f"--set total_steps=4 --set eval_every_steps=2 --set checkpoint_every_steps=2 "
        f"--set optimizer.warmup_steps=1 --set data.data_dir={tfds_dir}"
    )
    env = {
        **cpu_env(), "VARIANT": "tuning", "DATA": str(data), "WORKDIR": str(tmp_path / "runs"),
        "OUT": str(tmp_path / "out"), "PREVIOUS": str(tmp_path / "none"), "WHEELS": "",
        "PARALLEL": "1", "DEADLINE": "1200", "ONLY": f"{member},{detector}", "EXTRA": tiny,
        "PY": sys.executable, "STUDY_FLAGS": "--nms 0.5 --scores 0.3,0.6",
    }  # fmt: skip
    script = ["bash", "experiments/nested_pyramid/device.sh"]
    first = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0 and "finished: 2 members" in first.stdout, first.stdout[-3000:]
    assert f"{detector}: - {detector}: best by validation DSB" in first.stdout, first.stdout[-3000:]
    previous = tmp_path / "records"
    previous.mkdir()
    with tarfile.open(tmp_path / "out" / "tuning_records.tar.gz") as archive:
        archive.extractall(previous, filter="data")
    record = previous / member
    assert {"member.json", "eval_validation.json", "metrics.jsonl"} <= set(os.listdir(record))
    assert json.loads((record / "member.json").read_text())["finished"]
    assert "thresholds_validation.json" not in os.listdir(record)  # a U-Net has no study
    # The table of thresholds, built later from the packed study alone.
    study = previous / detector / "thresholds_validation.json"
    rows = json.loads(study.read_text())
    assert [(r["nms"], r["score_threshold"]) for r in rows] == [(0.5, 0.3), (0.5, 0.6)]
    table = tmp_path / "thresholds.md"
    chose = [sys.executable, "experiments/nested_pyramid/threshold_choice.py"]
    chose += ["--records", str(study), "--out", str(table)]
    built = subprocess.run(chose, cwd=ROOT, env=cpu_env(), capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    assert table.read_text() == (previous / detector / "thresholds_validation.md").read_text()

    # The next machine keeps the data elsewhere: SPEED=1 times the member copied in with it.
    moved = data.rename(tmp_path / "nuclei_elsewhere")
    env.update(ONLY="", PREVIOUS=str(previous), WORKDIR=str(tmp_path / "next"), SPEED="1")
    env.update(EXTRA=tiny + " --dry_run", OUT=str(tmp_path / "out2"), DATA=str(moved))
    second = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "FAILED" not in second.stdout, second.stdout[-3000:]
    with tarfile.open(tmp_path / "out2" / "tuning_records.tar.gz") as archive:
        speed = json.load(archive.extractfile(f"{member}/speed.json"))
    assert speed["device"] == "cpu" and speed["train_img_per_sec"] > 0, speed
    planned = next(line for line in second.stdout.splitlines() if line.startswith("to train: "))
    names = planned.removeprefix("to train: ").split(",")
    every = [m.name for m in load_experiment(f"{PATH}:tuning").members]
    assert names == [name for name in every if name not in (member, detector)]
    assert "unet_resnet18_adamw3e-4" in names and "maskrcnn_fpn_resnet18_adamw1e-3" in names
    assert "threshold study FAILED" not in second.stdout  # copied-in members have no checkpoint
