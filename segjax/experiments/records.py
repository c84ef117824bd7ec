"""A sweep member's records in its directory: ``member.json`` (the runner's status: overrides,
wall seconds, finished or not), ``speed.json`` (the speed phase) and, collected over members,
the eval results. Read by the runner and the reports; imports no JAX, so the runner does not take
the devices its members train on.
"""

import json
import os
import statistics

from segjax.experiments.spec import Experiment
from segjax.files import write_atomically


def read_status(directory: str) -> dict:
    path = os.path.join(directory, "member.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def write_status(directory: str, status: dict) -> None:
    text = json.dumps(status, indent=2, sort_keys=True)
    write_atomically(os.path.join(directory, "member.json"), text)  # never half-written


def read_speed(directory: str, size: int) -> dict | None:
    """A member's speed.json if it was measured at ``size``, else None. (The sweep runner reads
    it, so this module imports JAX only to measure: the runner must not take the devices its
    members train on.)"""
    path = os.path.join(directory, "speed.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    return record if record.get("size") == size else None


def collect(experiment: Experiment, workdir: str) -> list[dict]:
    """One record per finished member: its eval results, throughput and wall times."""
    records = []
    for member in experiment.members:
        directory = os.path.join(workdir, member.name)
        status = read_status(directory)
        if not status.get("finished"):
            continue
        results = json.load(open(os.path.join(directory, f"eval_{experiment.eval_split}.json")))
        rates = [
            r["train/img_per_sec"]
            for r in map(json.loads, open(os.path.join(directory, "metrics.jsonl")))
            if "train/img_per_sec" in r
        ]
        records.append(
            {
                "name": member.name,
                "config": member.config,
                "overrides": status["overrides"],
                "train_seconds": status["train_seconds"],
                "eval_seconds": status["eval_seconds"],
                "train_img_per_sec": statistics.median(rates) if rates else None,
                **{f"{experiment.eval_split}/{k}": v for k, v in results.items()},
            }
        )
    return records
