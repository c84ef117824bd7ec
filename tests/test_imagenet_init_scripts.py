"""experiments/imagenet_init's two scripts on made-up member records: the answer table (means and
spreads over seeds beside size and latency) and the curves figure."""

import csv
import json
import subprocess
import sys

from tests.cli_utils import ROOT

SCRIPTS = ROOT / "experiments" / "imagenet_init"


def test_summary_table_groups_seeds_and_joins_latency(tmp_path):
    rows = [
        ("unet_mobilenetv2_imagenet_seed0", 0, 0.90, 0.80),
        ("unet_mobilenetv2_imagenet_seed1", 1, 0.92, 0.84),
        ("unet_mobilenetv2_random_seed0", 0, 0.85, 0.70),
    ]
    results = tmp_path / "results.csv"
    with open(results, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "seed", "encoder", "params", "gmacs", "miou", "highlight_iou"])
        for name, seed, miou, iou in rows:
            writer.writerow([name, seed, "mobilenet_v2", 6629090, 3.3512, miou, iou])
    deploy = tmp_path / "deploy.json"
    timings = {"jax": {"1": {"median_ms": 41.26}}, "ort_fp32": {"1": {"median_ms": 30.0}}}
    deploy.write_text(json.dumps({"size": 256, "rows": [
        {"model": "unet:mobilenet_v2", "runtimes": timings}
    ]}))  # fmt: skip
    out = tmp_path / "summary.md"
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "summary.py"), "--results", str(results), "--deploy",
         str(deploy), "--out", str(out)], capture_output=True, text=True, check=True
    )  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| encoder | init | seeds | test mIoU | test nucleus IoU |")
    assert (
        "| mobilenet_v2 | imagenet | 0,1 | 0.9100 +- 0.0141 [0.9000, 0.9200] | "
        "0.8200 +- 0.0283 [0.8000, 0.8400] | 6,629,090 | 3.35 | 41.3 | 30.0 | - |" in lines
    )
    assert "| mobilenet_v2 | random | 0 | 0.8500 (1 seed) | 0.7000 (1 seed) |" in result.stdout


def test_curves_figure_is_written(tmp_path):
    workdir = tmp_path / "runs"
    for name in ("unet_mobilenetv2_imagenet_seed0", "unet_resnet34_random_seed1"):
        member = workdir / name
        member.mkdir(parents=True)
        records = [{"step": s, "train/loss": 1.0 / s} for s in (25, 50, 75, 100, 125)]
        records.append({"step": 75, "eval/iou/nucleus": 0.7})
        (member / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    out = tmp_path / "curves.png"
    subprocess.run(
        [sys.executable, str(SCRIPTS / "curves.py"), "--workdir", str(workdir), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = subprocess.run(
        [sys.executable, str(SCRIPTS / "curves.py"), "--workdir", str(tmp_path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2 and "no imagenet_init members" in empty.stderr
