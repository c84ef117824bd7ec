"""The sweep runner: members are ordinary train + evaluate runs; a killed sweep re-run finishes
only what is missing."""

import csv
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from segjax.experiments.spec import Experiment, Member, load_experiment, load_module
from segjax.models import create_model
from segjax.models.counting import summarize
from tests.cli_utils import FAST_COMPILE

ROOT = pathlib.Path(__file__).parents[1]
pytestmark = pytest.mark.slow

EXPERIMENT = """
from segjax.experiments.spec import Experiment, Member

def get_experiment():
    common = {"model.encoder": "resnet18", "model.encoder_depth": 3, "total_steps": 4}
    return Experiment(
        name="tiny",
        members=[
            Member("first", "configs/resnet_unet.py:smoke", common),
            Member("second", "configs/resnet_unet.py:smoke", {**common, "seed": 1}),
        ],
        eval_split="test",
        size=64,
        highlight_class="triangle",
        curves=True,
        comparisons=(("first", "second"),),
    )
"""


def runner(path, workdir, tfds_dir, *flags):
    return [
        sys.executable,
        "-m",
        "segjax.experiments.run",
        str(path),
        "--workdir",
        str(workdir),
        f"--set=data.data_dir={tfds_dir}",
        *flags,
    ]


def env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE}


def run(command):
    """Runs a command from the repository root on CPU; its output captured, never raising."""
    return subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, check=False)


def test_killed_sweep_reruns_only_the_missing_members(tfds_dir, shapes_small, tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(EXPERIMENT)
    workdir = tmp_path / "sweep"

    dry = run(runner(path, workdir, tfds_dir, "--dry_run"))
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "[1/2] first: to run: train, eval, speed" in dry.stdout
    assert "python -m segjax.train --config" in dry.stdout
    assert "python -m segjax.experiments.speed --workdir" in dry.stdout
    assert "--size 64" in dry.stdout
    assert "--config.seed=1" in dry.stdout and not workdir.exists()

    # Kill the whole sweep (runner and its training process) once the second member is training.
    # (Without the speed phase; it is measured for one member at the end.)
    process = subprocess.Popen(
        runner(path, workdir, tfds_dir, "--nospeed"),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    second = workdir / "second"
    deadline = time.time() + 300
    while not (second / "metrics.jsonl").exists():
        assert process.poll() is None, "the sweep ended before it could be killed"
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first_metrics = (workdir / "first" / "metrics.jsonl").read_text()
    assert json.loads((workdir / "first" / "member.json").read_text())["finished"]
    killed = json.loads((second / "member.json").read_text())
    assert not killed.get("finished")
    assert killed["train_seconds"] > 0  # the killed attempt's wall time so far is kept

    rerun = run(runner(path, workdir, tfds_dir, "--nospeed"))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "[1/2] first: finished before, skipped" in rerun.stdout
    assert "[2/2] second: running train, eval" in rerun.stdout
    assert (workdir / "first" / "metrics.jsonl").read_text() == first_metrics  # not retrained
    records = json.loads((workdir / "results.json").read_text())
    assert [r["name"] for r in records] == ["first", "second"]
    for record in records:
        assert 0.0 <= record["test/miou"] <= 1.0 and record["test/examples"] == 23
        assert record["train_seconds"] > 0 and record["train_img_per_sec"] > 0
    assert records[1]["overrides"]["seed"] == 1
    assert records[1]["train_seconds"] > killed["train_seconds"]  # summed over both attempts
    assert not (workdir / "first" / "speed.json").exists()
    # A finished member without speed.json: only the speed phase runs.
    timed = run(runner(path, workdir, tfds_dir, "--only=first"))
    assert timed.returncode == 0, timed.stdout[-3000:] + timed.stderr[-3000:]
    assert "[1/1] first: running speed" in timed.stdout
    assert (workdir / "first" / "metrics.jsonl").read_text() == first_metrics

    # The report: a table, a CSV and a plot of the finished members, with the speed phase's
    # figures.
    out = tmp_path / "report"
    report = [
        sys.executable,
        "-m",
        "segjax.experiments.report",
        str(path),
        f"--workdir={workdir}",
        f"--out={out}",
    ]
    made = run(report)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    table = (out / "results.md").read_text()
    assert "4 steps of batch 4 at 32x32 (one budget for every model)" in table
    assert "| first |" in table and "| second |" in table and "GMACs@64" in table
    assert "| triangle IoU (set) |" in table  # the experiment's highlight_class
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["name"] for r in rows] == ["first", "second"]
    model = create_model("unet", "resnet18", num_classes=4, encoder_depth=3)
    expected = summarize(model, (1, 64, 64, 3))
    assert int(rows[0]["params"]) == expected.params
    np.testing.assert_allclose(float(rows[0]["gmacs"]), expected.macs / 1e9)
    assert float(rows[1]["miou"]) == records[1]["test/miou"]
    assert float(rows[1]["highlight_iou"]) == records[1]["test/iou/triangle"]
    assert float(rows[0]["image_miou"]) == records[0]["test/image_miou"]
    assert float(rows[0]["inference_ms"]) > 0 and float(rows[0]["train_img_per_sec"]) > 0
    assert rows[1]["inference_ms"] == "nan" and "| - | - |" in table  # second: not measured
    # "first" and "second" differ only in their seed: one model, two seeds.
    assert "## Seed spread" in table and "| first | 0,1 |" in table
    (spread,) = list(csv.DictReader(open(out / "seeds.csv")))
    mean = (records[0]["test/miou"] + records[1]["test/miou"]) / 2
    np.testing.assert_allclose(float(spread["miou_mean"]), mean)
    with Image.open(out / "results.png") as picture:
        assert picture.size[0] > 800 and picture.size[1] > 400
    # curves=True: each member's validation curve (steps 3 and 4) and its convergence figures.
    convergence = (out / "convergence.md").read_text()
    assert re.search(r"\| first \| 2 \| [0-9.]+ \| [0-9.]+ \|", convergence)
    assert "members meet the criterion" in convergence and (out / "curves.png").exists()
    # comparisons: first against second over the 23 test images' triangle IoU.
    tests = (out / "paired.md").read_text()
    assert re.search(r"\| first \| second \| 1 / 1 \| \d+ \|", tests)
    assert "Wilcoxon p = " in tests
    # The dropout diagnostic restores the evaluated checkpoint and predicts in both modes.
    check = run(
        [
            sys.executable,
            "experiments/backbones/dropout_check.py",
            f"--workdir={workdir / 'first'}",
            "--batches=1",
        ]
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert "checkpoint of step 4" in check.stdout
    accuracies = re.findall(
        r"dropout (?:off|on) \((?:eval|train)\): pixel accuracy ([0-9.]+)", check.stdout
    )
    assert len(accuracies) == 2 and all(0.0 <= float(a) <= 1.0 for a in accuracies)
    speed = json.loads((workdir / "first" / "speed.json").read_text())
    assert speed["size"] == 64 and float(rows[0]["inference_ms"]) == speed["inference_ms"]


FAILING = """
from segjax.experiments.spec import Experiment, Member

def get_experiment():
    common = {"model.encoder": "resnet18", "model.encoder_depth": 3, "total_steps": 2}
    return Experiment(name="failing", members=[
        Member("no_data", "configs/resnet_unet.py:smoke",
               {**common, "data.name": "folder", "data.path": "/no/such/dir"}),
        Member("good", "configs/resnet_unet.py:smoke", common),
        BAD
    ])
"""


def test_sigterm_stops_the_sweep_with_its_member_saved(tfds_dir, shapes_small, tmp_path):
    """SIGTERM to the runner alone (a batch system's stop): it once died at once, leaving its
    member's log empty and the training, its output pipe gone, to die without saving. Now the
    training saves, nothing new starts, and the runner says how to resume."""
    long = EXPERIMENT.replace('"total_steps": 4', '"total_steps": 100000')
    path = tmp_path / "long.py"
    path.write_text(long)
    workdir = tmp_path / "sweep"
    process = subprocess.Popen(
        runner(path, workdir, tfds_dir, "--nospeed", "--set=checkpoint_every_steps=100000"),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = workdir / "first"
    deadline = time.time() + 300
    while "first_step_sec" not in _text(first / "metrics.jsonl"):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stdout[-3000:] + stderr[-3000:]
    assert "SIGTERM: the sweep stopped" in stderr, stderr[-3000:]
    log = (first / "train.log").read_text()
    assert "SIGTERM: saved step" in log, log[-3000:]
    assert [p for p in (first / "checkpoints").iterdir() if p.name.isdigit()]
    assert not json.loads((first / "member.json").read_text())["finished"]
    assert not (first / "eval.log").exists() and not (workdir / "second").exists()


def _text(path) -> str:
    return path.read_text() if path.exists() else ""


def test_bad_members_are_refused_up_front_and_a_failing_member_does_not_stop_the_rest(
    tfds_dir, shapes_small, tmp_path
):
    """Issue 25: every member's config is checked before the first trains (naming the member
    and the key); a member that fails while running is reported and the others still run."""
    path = tmp_path / "failing.py"
    bad = 'Member("bad_key", "configs/resnet_unet.py:smoke", {"model.no_such_key": 1}),'
    path.write_text(FAILING.replace("BAD", bad))
    refused = run(runner(path, tmp_path / "refused", tfds_dir, "--nospeed"))
    assert refused.returncode == 2 and not (tmp_path / "refused").exists()
    assert "member 'bad_key': --config.model.no_such_key=1: the config has no key" in (
        refused.stderr
    )
    path.write_text(FAILING.replace("BAD", ""))
    workdir = tmp_path / "sweep"
    result = run(runner(path, workdir, tfds_dir, "--nospeed"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[1/2] no_data: FAILED" in result.stdout and "[2/2] good: running" in result.stdout
    assert "1 member(s) failed: no_data" in result.stderr
    records = json.loads((workdir / "results.json").read_text())
    assert [r["name"] for r in records] == ["good"]


def test_a_member_recorded_with_other_settings_is_refused_not_skipped(tmp_path):
    from segjax.errors import UserError
    from segjax.experiments.records import write_status
    from segjax.experiments.run import check_recorded

    config = "configs/resnet_unet.py:smoke"
    members = [Member("same", config, {"total_steps": 30, "data.image_size": (64, 64)})]
    members.append(Member("longer", config, {"total_steps": 45}))
    members.append(Member("new", config, {"total_steps": 30}))
    for name, steps in (("same", 30), ("longer", 30)):
        (tmp_path / name).mkdir()
        recorded = {"total_steps": steps, "data.image_size": [64, 64]} if name == "same" else {}
        write_status(
            str(tmp_path / name),
            {"config": config, "overrides": recorded or {"total_steps": steps}, "finished": True},
        )
    check_recorded(members[:1] + members[2:], str(tmp_path), {})  # tuples recorded as lists
    with pytest.raises(
        UserError,
        match=r"1 member\(s\) ran with other settings than the "
        r"experiment now gives them: longer \(total_steps: 30 -> 45\); move",
    ):
        check_recorded(members, str(tmp_path), {})
    with pytest.raises(UserError, match=r"same \(data.path: None -> '/d'\)"):
        check_recorded(members[:1], str(tmp_path), {"data.path": "/d"})


def test_experiment_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="bad.py: defines no get_experiment"):
        load_experiment(str(path))
    with pytest.raises(ValueError, match="no such experiment file"):
        load_experiment(str(tmp_path / "missing.py"))
    path.write_text(
        "from segjax.experiments.spec import Experiment, Member\n"
        "def get_experiment():\n"
        "    return Experiment('x', [Member('a', 'configs/resnet_unet.py'),"
        " Member('a', 'configs/ghost_unet.py')])\n"
    )
    with pytest.raises(ValueError, match=r"member names \['a'\] appear more than once"):
        load_experiment(str(path))


def test_member_arguments_format_overrides():
    member = Member("m", "configs/resnet_unet.py:dsb2018", {"data.image_size": (128, 128)})
    assert member.train_arguments({"seed": 3}) == [
        "--config",
        "configs/resnet_unet.py:dsb2018",
        "--config.data.image_size=128,128",
        "--config.seed=3",
    ]
    assert Experiment("x", [member]).eval_split == "test"


def load_config_file(config: str):
    path, _, variant = config.partition(":")
    return load_module(str(ROOT / path), "module").get_config(variant or None)


def budgets_of(experiment) -> set:
    """Each member's (steps, batch, input size), after checking that every override names a key
    of its member's config."""
    budgets = set()
    for member in experiment.members:
        config = load_config_file(member.config)
        for key in member.overrides:
            node = config
            for part in key.split("."):
                assert part in node, f"{member.name}: no config key {key!r}"
                node = node[part]
        budgets.add(
            tuple(member.overrides[k] for k in ("total_steps", "batch_size", "data.image_size"))
        )
    return budgets


def test_backbones_experiment_names_real_keys_and_one_budget():
    experiment = load_experiment(str(ROOT / "experiments" / "backbones.py"))
    assert len(experiment.members) == 12 and experiment.eval_split == "test"
    assert len(budgets_of(experiment)) == 1  # every member trains with the same budget


def test_founding_variants_share_one_protocol_and_the_grid_takes_the_chosen_recipes():
    path = str(ROOT / "experiments" / "founding.py")
    tuning = load_experiment(path + ":tuning")
    grid = load_experiment(path + ":grid")
    assert tuning.eval_split == "validation"  # tuning never sees the test split
    assert grid.eval_split == "test"
    assert len(tuning.members) == 21 and len(budgets_of(tuning)) == 1
    assert len(grid.members) == 25 and len(budgets_of(grid)) == 3  # GRID_STEPS, LONG_BUDGETS
    longer = ("unetpp_", "unet_mobilenetv2", "unet_ghostnet100", "unet_paper")  # every U-Net++
    for member in grid.members:
        steps = 4500 if member.name.startswith(longer) else 3000
        steps = 9000 if member.name.startswith("unet_resnet34") else steps
        assert member.overrides["total_steps"] == steps, member.name
        assert member.overrides["eval_every_steps"] * 12 == member.overrides["total_steps"]
    recipes = {
        m.name.removeprefix("unet_"): {k: v for k, v in m.overrides.items() if "optimizer." in k}
        for m in tuning.members
    }
    chosen = {f: r for f, r in load_module(path).GRID_RECIPE.items()}
    assert chosen["ghostnet100"] == "adamw3e-3" and chosen["resnet34"] == "adamw1e-3"
    for member in grid.members:
        family = next((f for f in chosen if f"_{f}" in member.name), None)
        if family is None:  # the paper U-Net: pytorch-nested-unet's own recipe
            continue
        optimizer = {k: v for k, v in member.overrides.items() if "optimizer." in k}
        expected = dict(recipes[f"{family}_{chosen[family]}"])
        expected["optimizer.warmup_steps"] = optimizer["optimizer.warmup_steps"]  # the budget's
        assert optimizer == expected, member.name
    assert sorted({m.overrides["seed"] for m in grid.members}) == [0, 1, 2]
    with pytest.raises(ValueError, match="founding.py:x: unknown variant 'x'"):
        load_experiment(path + ":x")


def test_founding_h200_grid_is_the_cpu_grid_at_8x_batch_for_an_eighth_of_the_steps():
    experiments = ROOT / "experiments"
    cpu = {m.name: m for m in load_experiment(str(experiments / "founding.py:grid")).members}
    gpu = load_experiment(str(experiments / "founding_h200.py:grid"))
    assert [m.name for m in gpu.members] == list(cpu)
    for member in gpu.members:
        base = cpu[member.name].overrides
        steps = base["total_steps"] // 8
        assert member.config == cpu[member.name].config
        assert member.overrides["batch_size"] == 8 * base["batch_size"] == 64
        assert member.overrides["total_steps"] == steps
        assert member.overrides["eval_every_steps"] == steps // 12
        assert member.overrides["optimizer.warmup_steps"] == steps // 20
        assert member.overrides["model.dtype"] == "bfloat16"
        changed = {"batch_size", "total_steps", "eval_every_steps", "checkpoint_every_steps"}
        changed |= {"optimizer.warmup_steps", "log_every_steps", "model.dtype"}
        unchanged = {k: v for k, v in member.overrides.items() if k not in changed}
        assert unchanged == {k: v for k, v in base.items() if k not in changed}


def test_founding_init_trains_the_grids_mobilenet_from_random_weights_and_nothing_else():
    grid = {m.name: m for m in load_experiment(str(ROOT / "experiments" / "founding.py")).members}
    init = load_experiment(str(ROOT / "experiments" / "founding_init.py"))
    names = [m.name for m in init.members]
    assert names[:3] == [f"unet_mobilenetv2_seed{s}" for s in (0, 1, 2)]
    for member in init.members[:3]:  # the grid's own ImageNet runs, to be skipped as finished
        assert member == grid[member.name]
    imagenet = grid["unet_mobilenetv2_seed0"]
    for member in init.members[3:]:
        assert member.name.startswith("unet_mobilenetv2_random_seed")
        assert member.config == imagenet.config
        expected = {k: v for k, v in imagenet.overrides.items() if "pretrained" not in k}
        assert member.overrides == {**expected, "seed": member.overrides["seed"]}
    assert init.comparisons == (("unet_mobilenetv2", "unet_mobilenetv2_random"),)


def test_founding_extra_seeds_rule_flags_a_wide_spread_and_adds_its_seeds(tmp_path, monkeypatch):
    founding = load_module(str(ROOT / "experiments" / "founding.py"))
    models = {}
    for model, bests in {"steady": (0.80, 0.805, 0.81), "wide": (0.80, 0.83, 0.78)}.items():
        for seed, best in enumerate(bests):
            name = f"{model}_seed{seed}"
            (tmp_path / name).mkdir()
            lines = [
                {"step": 100, "eval/iou/nucleus": best - 0.1},
                {"step": 200, "eval/iou/nucleus": best},
            ]
            (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
            models.setdefault(model, []).append({"name": name, "seed": seed})
    table = "\n".join(founding.seed_spread_lines(models, str(tmp_path)))
    assert "| steady | 0: 0.8000, 1: 0.8050, 2: 0.8100 | 0.0050 | none needed |" in table
    assert "| wide | 0: 0.8000, 1: 0.8300, 2: 0.7800 | 0.0252 | DUE: add seeds 3 and 4" in table
    monkeypatch.setattr(founding, "EXTRA_SEEDS", {"unet_ghostnet100": (3, 4)})
    names = [m.name for m in founding.grid().members]
    assert len(names) == 27 and names[-2:] == ["unet_ghostnet100_seed3", "unet_ghostnet100_seed4"]


def test_founding_answer_table_fills_latency_and_sizes_from_deploy_json(tmp_path):
    """The grid's answer from committed records: deploy.json's latencies and file sizes fill the
    model's row and put it on the Pareto plot; int8.json gives each seed's drop."""
    from segjax.experiments.report import write_report

    records = ROOT / "experiments" / "founding" / "grid" / "members"
    workdir, out = tmp_path / "runs", tmp_path / "out"
    for seed in (0, 1, 2):
        name = f"unet_efficientnetlite0_seed{seed}"
        shutil.copytree(records / name, workdir / name)
    out.mkdir()
    timing = {"1": {"median_ms": 12.5}}
    deploy = {
        "model": "unet_efficientnetlite0",
        "runtimes": {"ort_fp32": {"1": {"median_ms": 20.25}}, "ort_int8": timing},
        "files": {"onnx_fp32": 20_800_000, "onnx_int8": 5_400_000},
    }
    (out / "deploy.json").write_text(json.dumps({"rows": [deploy]}))
    drops = {0: 0.0002, 1: -0.001, 2: -0.0125}
    int8 = {f"unet_efficientnetlite0_seed{s}": {"difference": d} for s, d in drops.items()}
    (out / "int8.json").write_text(json.dumps(int8))
    write_report(str(ROOT / "experiments" / "founding.py") + ":grid", str(workdir), str(out))
    answer = (out / "answer.md").read_text()
    row = next(line for line in answer.splitlines() if line.startswith("| unet_efficientnetlite0"))
    assert row.endswith("| 20.2 | 12.5 | 20.8 / 5.4 | +0.0002, -0.0010, -0.0125 |"), row
    assert "3000 steps of batch 8 (4500: unetpp_resnet34," in answer
    assert "; 9000: unet_resnet34)" in answer
    assert "| unet_paper | not finished |" in answer
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# spec -> (record patterns, committed folder, tables compared[, inputs copied into the report's
# out folder first: figures measured outside the report, e.g. int8.json, deploy.json])
COMMITTED_TABLES = {
    "founding.py:tuning": (
        ["founding/tuning/members/*"],
        "founding/tuning",
        ["tuning.md", "results.md", "results.csv", "convergence.md"],
    ),
    "founding.py:grid": (
        ["founding/grid/members/*"],
        "founding/grid",
        ["answer.md", "paired.md", "convergence.md", "results.md", "results.csv", "seeds.csv"],
        ["int8.json", "deploy.json"],
    ),
    "founding_h200.py:grid": (
        ["founding/grid_h200/members/*"],
        "founding/grid_h200",
        [
            "results.md",
            "results.csv",
            "seeds.csv",
            "paired.md",
            "convergence.md",
            "reproduction.md",
        ],
    ),
    "founding_init.py": (
        ["founding/grid/members/unet_mobilenetv2_seed*", "founding_init/members/*"],
        "founding_init",
        ["results.md", "results.csv", "seeds.csv", "paired.md", "convergence.md"],
    ),
}


@pytest.mark.parametrize("spec", sorted(COMMITTED_TABLES))
def test_committed_founding_tables_rebuild_byte_for_byte_from_committed_records(spec, tmp_path):
    """What the READMEs quote is what the report writes from the records in the repository."""
    from segjax.experiments.report import write_report

    patterns, committed, files, *inputs = COMMITTED_TABLES[spec]
    experiments = ROOT / "experiments"
    workdir, out = tmp_path / "runs", tmp_path / "out"
    for pattern in patterns:
        for record in sorted(experiments.glob(pattern)):
            shutil.copytree(record, workdir / record.name)
    out.mkdir()
    for name in inputs[0] if inputs else ():  # measured elsewhere, read by the report from out
        shutil.copy(experiments / committed / name, out / name)
    write_report(str(experiments / spec), str(workdir), str(out))
    for name in files:
        assert (out / name).read_bytes() == (experiments / committed / name).read_bytes(), name


def test_seed_study_repeats_backbones_members_with_other_seeds():
    backbones = {
        m.name: m for m in load_experiment(str(ROOT / "experiments" / "backbones.py")).members
    }
    seeds = load_experiment(str(ROOT / "experiments" / "backbones_seeds.py"))
    assert len(seeds.members) == 12 and seeds.eval_split == "test"
    for member in seeds.members:
        name, _, seed = member.name.rpartition("_seed")
        base = backbones[name]
        assert member.config == base.config and member.overrides["seed"] == int(seed)
        assert {k: v for k, v in member.overrides.items() if k != "seed"} == {
            k: v for k, v in base.overrides.items() if k != "seed"
        }
    assert {m.overrides["seed"] for m in seeds.members} == {0, 1, 2}
