"""Runs a sweep: ``python -m segjax.experiments.run experiments/backbones.py --workdir runs/x``.

Each member is an ordinary ``segjax.train`` run in ``<workdir>/<member>`` followed by
``segjax.evaluate`` on the experiment's eval split, each in its own process, so a member is
exactly what its command line would give by hand (``--dry_run`` prints those commands). A member
whose ``member.json`` says it finished is skipped; an interrupted one is re-run with the same
command, and training resumes from its last checkpoint. ``--only a,b`` runs some members;
``--set key=value`` overrides a config key for every member (e.g. ``data.path``). At the end the
finished members' results are collected into ``<workdir>/results.json``.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

from segjax.experiments.spec import Experiment, Member, load_experiment
from segjax.reporting import format_duration


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the sweep's directory: one subdirectory per member")
    flags.DEFINE_list("only", [], "run only these members (comma-separated names)")
    flags.DEFINE_bool("dry_run", False, "print each member's commands and status; run nothing")
    flags.DEFINE_multi_string("set", [], "key=value: a config override for every member")


def member_commands(member: Member, workdir: str, split: str, extra: dict) -> list[list[str]]:
    directory = os.path.join(workdir, member.name)
    python = [sys.executable, "-m"]
    return [
        [*python, "segjax.train", *member.train_arguments(extra), "--workdir", directory],
        [*python, "segjax.evaluate", "--workdir", directory, "--split", split],
    ]


def read_status(directory: str) -> dict:
    path = os.path.join(directory, "member.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def write_status(directory: str, status: dict) -> None:
    path = os.path.join(directory, "member.json")
    with open(path + ".tmp", "w") as f:
        json.dump(status, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)  # never a half-written status


def run_logged(command: list[str], log_path: str, on_line=None) -> int:
    """Runs ``command``, its output both on the terminal and appended to ``log_path``;
    ``on_line()`` is called after each line of output."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
            if on_line is not None:
                on_line()
        return process.wait()


# How often a running phase's wall time so far is written to member.json, so that an attempt
# killed mid-way (SIGKILL, a machine shut down) still counts in the member's wall time.
STATUS_EVERY_SECONDS = 2.0


def run_member(member: Member, workdir: str, split: str, extra: dict) -> dict:
    directory = os.path.join(workdir, member.name)
    os.makedirs(directory, exist_ok=True)
    status = read_status(directory)
    status.update(
        {"config": member.config, "overrides": {**member.overrides, **extra}, "finished": False}
    )
    write_status(directory, status)
    train, evaluate = member_commands(member, workdir, split, extra)
    for phase, command in (("train", train), ("eval", evaluate)):
        # Wall time summed over attempts: an interrupted and resumed member counts both.
        before, start, written = status.get(f"{phase}_seconds", 0.0), time.time(), 0.0

        def record(force: bool = False, phase=phase, before=before, start=start) -> None:
            nonlocal written
            now = time.time()
            if force or now - written >= STATUS_EVERY_SECONDS:
                status[f"{phase}_seconds"] = before + now - start
                write_status(directory, status)
                written = now

        code = run_logged(command, os.path.join(directory, f"{phase}.log"), record)
        record(force=True)
        if code != 0:
            raise RuntimeError(
                f"member {member.name!r}: {phase} exited with {code}; see {directory}/{phase}.log"
            )
    status["finished"] = True
    write_status(directory, status)
    return status


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


def parse_set(items: list[str]) -> dict:
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise app.UsageError(f"--set {item!r}: expected key=value")
        extra[key.removeprefix("config.")] = value
    return extra


def main(argv) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: python -m segjax.experiments.run EXPERIMENT.py --workdir DIR")
    args = flags.FLAGS
    if not args.workdir:
        raise app.UsageError("--workdir is required")
    try:
        experiment = load_experiment(argv[1])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    extra = parse_set(args.set)
    names = [m.name for m in experiment.members]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        print(
            f"error: --only {unknown}: not members of {argv[1]}; they are {names}", file=sys.stderr
        )
        sys.exit(2)
    members = [m for m in experiment.members if not args.only or m.name in args.only]

    start = time.time()
    for position, member in enumerate(members, start=1):
        directory = os.path.join(args.workdir, member.name)
        done = read_status(directory).get("finished", False)
        header = f"[{position}/{len(members)}] {member.name}"
        if args.dry_run:
            print(f"{header}: {'finished' if done else 'to run'}")
            for command in member_commands(member, args.workdir, experiment.eval_split, extra):
                print("  python " + " ".join(command[1:]))
            continue
        if done:
            print(f"{header}: finished before, skipped", flush=True)
            continue
        print(f"{header}: running ({format_duration(time.time() - start)} so far)", flush=True)
        try:
            run_member(member, args.workdir, experiment.eval_split, extra)
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
    if args.dry_run:
        return
    records = collect(experiment, args.workdir)
    path = os.path.join(args.workdir, "results.json")
    with open(path, "w") as f:
        json.dump(records, f, indent=2)
    print(f"{len(records)}/{len(experiment.members)} members finished; results in {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
