"""Runs a sweep: ``python -m segjax.experiments.run experiments/backbones.py --workdir runs/x``.

Each member is an ordinary ``segjax.train`` run in ``<workdir>/<member>``, then
``segjax.evaluate`` on the experiment's eval split, then ``segjax.experiments.speed`` (its
training and inference speed, measured alone, into ``speed.json``; ``--nospeed`` skips it), each
in its own process, so a member is exactly what its command lines would give by hand
(``--dry_run`` prints them). A member whose ``member.json`` says it finished is skipped (only its
speed is measured if that is missing); an interrupted one is re-run with the same command, and
training resumes from its last checkpoint. ``--only a,b`` runs some members; ``--set key=value``
overrides a config key for every member (e.g. ``data.path``). At the end the finished members'
results are collected into ``<workdir>/results.json``.

SIGTERM or Ctrl-C stops the sweep without losing work: the runner passes SIGTERM on to the
members' processes (a training saves a checkpoint at its next step and exits), starts nothing new,
and exits 1 once they have stopped; the same command resumes.

``--parallel N`` trains and evaluates N members at once, each in processes of its own, on the
same devices: a sweep's members rarely fill an accelerator. Each process gets 1/N of the device
memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``), their output lines are prefixed with the member's
name, and the speed phases run afterwards, one at a time, so that no member is timed beside
another. Every member's processes share one compilation cache (``<workdir>/jax_cache``, unless
``JAX_COMPILATION_CACHE_DIR`` is set), so seeds of a model compile once.
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time

from absl import flags

from segjax import cli
from segjax.errors import RunError, UserError
from segjax.experiments.records import collect, read_speed, read_status, write_status
from segjax.experiments.spec import Experiment, Member, load_experiment
from segjax.reporting import format_duration


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "the sweep's directory: one subdirectory per member")
    flags.DEFINE_list("only", [], "run only these members (comma-separated names)")
    flags.DEFINE_bool("dry_run", False, "print each member's commands and status; run nothing")
    flags.DEFINE_multi_string("set", [], "key=value: a config override for every member")
    flags.DEFINE_bool("speed", True, "measure each member's speed after its evaluation")
    flags.DEFINE_integer(
        "parallel",
        1,
        lower_bound=1,
        help="train and evaluate this many members at once on the same devices, each with 1/N "
        "of the device memory; speed phases run afterwards, one at a time",
    )


# The share of device memory the members running at once take together (JAX's default for one
# process is 0.75; the rest is left to the CUDA context of each process).
MEMORY_SHARE = 0.9


def member_environment(workdir: str, parallel: int, environ=os.environ) -> dict[str, str]:
    """The variables the runner adds to its members' environment: the shared compilation cache
    (where none is set) and, with ``parallel`` > 1, each process's share of device memory
    (where the user set none)."""
    env = {}
    if "JAX_COMPILATION_CACHE_DIR" not in environ:
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(os.path.join(workdir, "jax_cache"))
    if parallel > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in environ:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{MEMORY_SHARE / parallel:.3f}"
    return env


def member_commands(member: Member, workdir: str, experiment: Experiment, extra: dict) -> dict:
    """The command line of each phase: train, eval and speed."""
    directory = os.path.join(workdir, member.name)
    python = [sys.executable, "-m"]
    return {
        "train": [*python, "segjax.train", *member.train_arguments(extra), "--workdir", directory],
        "eval": [
            *python,
            "segjax.evaluate",
            "--workdir",
            directory,
            "--split",
            experiment.eval_split,
            *member.eval_flags,
        ],
        "speed": [
            *python,
            "segjax.experiments.speed",
            "--workdir",
            directory,
            "--size",
            str(experiment.size),
        ],
    }


_PRINTING = threading.Lock()  # one member's line at a time on the terminal


class Stopped(RunError):
    """The sweep was asked to stop (SIGTERM, Ctrl-C); its members kept what they had saved."""


class _Members:
    """The members' running processes. A stop request (``stop``, the runner's SIGTERM and SIGINT
    handler) is passed on to them as SIGTERM, on which a training saves at its next step and
    exits, and keeps any new phase from starting. Without it the runner died at once, and its
    members, their output pipe gone, died at their next line without saving."""

    def __init__(self):
        self.running: set[subprocess.Popen] = set()
        self.signal_name: str | None = None

    def stop(self, signum, frame=None) -> None:
        del frame
        self.signal_name = signal.Signals(signum).name
        for process in list(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def check(self) -> None:
        if self.signal_name is not None:
            raise Stopped(
                f"{self.signal_name}: the sweep stopped, each member at its last checkpoint; "
                "re-run the same command to resume"
            )


MEMBERS = _Members()


def run_logged(
    command: list[str], log_path: str, on_line=None, env: dict | None = None, prefix: str = ""
) -> int:
    """Runs ``command`` (``env`` added to the environment), its output both on the terminal,
    each line after ``prefix``, and appended to ``log_path`` line by line (a runner killed
    outright keeps every line so far); ``on_line()`` is called after each line of output.
    Raises ``Stopped`` instead of starting it, or once it has ended, after a stop request."""
    MEMBERS.check()
    with open(log_path, "a", buffering=1) as log:
        log.write(f"$ {' '.join(command)}\n")
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
        )
        MEMBERS.running.add(process)
        try:
            for line in process.stdout:
                with _PRINTING:
                    sys.stdout.write(prefix + line)
                    sys.stdout.flush()
                log.write(line)
                if on_line is not None:
                    on_line()
            code = process.wait()
        finally:
            MEMBERS.running.discard(process)
    MEMBERS.check()  # a training stopped on request exits 0: not a finished phase
    return code


# How often a running phase's wall time so far is written to member.json, so that an attempt
# killed mid-way (SIGKILL, a machine shut down) still counts in the member's wall time.
STATUS_EVERY_SECONDS = 2.0


def phases_to_run(member: Member, workdir: str, experiment: Experiment, speed: bool) -> list:
    """What a member still needs: train and eval unless it finished, and speed if asked and
    not measured at the experiment's size."""
    directory = os.path.join(workdir, member.name)
    phases = [] if read_status(directory).get("finished") else ["train", "eval"]
    if speed and read_speed(directory, experiment.size) is None:
        phases.append("speed")
    return phases


def run_member(
    member: Member,
    workdir: str,
    experiment: Experiment,
    extra: dict,
    phases: list[str],
    env: dict | None = None,
    prefix: str = "",
) -> dict:
    directory = os.path.join(workdir, member.name)
    os.makedirs(directory, exist_ok=True)
    status = read_status(directory)
    if "train" in phases:
        status.update(
            {"config": member.config, "overrides": {**member.overrides, **extra}, "finished": False}
        )
        write_status(directory, status)
    commands = member_commands(member, workdir, experiment, extra)
    for phase in phases:
        command = commands[phase]
        # Wall time summed over attempts: an interrupted and resumed member counts both.
        before, start, written = status.get(f"{phase}_seconds", 0.0), time.time(), 0.0

        def record(force: bool = False, phase=phase, before=before, start=start) -> None:
            nonlocal written
            now = time.time()
            if force or now - written >= STATUS_EVERY_SECONDS:
                status[f"{phase}_seconds"] = before + now - start
                write_status(directory, status)
                written = now

        try:
            code = run_logged(command, os.path.join(directory, f"{phase}.log"), record, env, prefix)
        finally:
            record(force=True)
        if code != 0:
            raise RunError(
                f"member {member.name!r}: {phase} exited with {code}; see {directory}/{phase}.log"
            )
        if phase == "eval":
            status["finished"] = True
            write_status(directory, status)
    return status


def parse_set(items: list[str]) -> dict:
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value")
        extra[key.removeprefix("config.")] = value
    return extra


def main(argv) -> int:
    (path,) = cli.positional(argv, ("experiment",))
    cli.require("workdir")
    args = flags.FLAGS
    try:
        experiment = load_experiment(path)
    except ValueError as error:
        raise UserError(str(error)) from None
    extra = parse_set(args.set)
    names = [m.name for m in experiment.members]
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        raise UserError(f"--only {unknown}: not members of {path}; they are {names}")
    members = [m for m in experiment.members if not args.only or m.name in args.only]

    if not args.dry_run:
        check_members(members, extra)
        check_recorded(members, args.workdir, extra)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, MEMBERS.stop)
    start, failed = time.time(), []
    plan = [
        (f"[{position}/{len(members)}] {member.name}", member)
        for position, member in enumerate(members, start=1)
    ]

    def say(line: str) -> None:
        with _PRINTING:
            print(line, flush=True)

    def run_phases(header, member, phases, env, prefix: str = "") -> bool:
        if not phases:
            say(f"{header}: finished before, skipped")
            return True
        say(
            f"{header}: running {', '.join(phases)} ({format_duration(time.time() - start)} so far)"
        )
        try:
            run_member(member, args.workdir, experiment, extra, phases, env, prefix)
        except Stopped:
            raise
        except RunError as error:  # one member's failure does not stop the others
            say(f"{header}: FAILED: {error}")
            failed.append(f"{member.name} ({error})")
            return False
        if prefix:
            say(f"{header}: {', '.join(phases)} done ({format_duration(time.time() - start)})")
        return True

    for header, member in plan:
        phases = phases_to_run(member, args.workdir, experiment, args.speed)
        if args.dry_run:
            print(f"{header}: {'to run: ' + ', '.join(phases) if phases else 'finished'}")
            commands = member_commands(member, args.workdir, experiment, extra)
            for phase in phases or commands:
                print("  python " + " ".join(commands[phase][1:]))
        elif args.parallel == 1:
            run_phases(header, member, phases, member_environment(args.workdir, 1))
    if args.parallel > 1 and not args.dry_run:
        run_packed(plan, args, experiment, run_phases)
    if args.dry_run:
        return 0
    records = collect(experiment, args.workdir)
    path = os.path.join(args.workdir, "results.json")
    with open(path, "w") as f:
        json.dump(records, f, indent=2)
    print(f"{len(records)}/{len(experiment.members)} members finished; results in {path}")
    if failed:
        raise RunError(f"{len(failed)} member(s) failed: " + "; ".join(failed))
    return 0


def run_packed(plan: list, args, experiment: Experiment, run_phases) -> None:
    """``--parallel``: the members' training and evaluation, ``args.parallel`` at a time, then
    the speed phases of those that finished, one after another (timed alone, with the whole
    device)."""
    todo = {m.name: phases_to_run(m, args.workdir, experiment, args.speed) for _, m in plan}
    print(f"{len(plan)} members, {args.parallel} at a time", flush=True)
    packed = member_environment(args.workdir, args.parallel)

    def train_and_evaluate(item) -> bool:
        header, member = item
        phases = [p for p in todo[member.name] if p != "speed"]
        return run_phases(header, member, phases, packed, f"[{member.name}] ")

    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        finished = list(pool.map(train_and_evaluate, plan))
    alone = member_environment(args.workdir, 1)
    for (header, member), ok in zip(plan, finished, strict=True):
        if ok and "speed" in todo[member.name]:
            run_phases(header, member, ["speed"], alone)


def check_recorded(members: list[Member], workdir: str, extra: dict) -> None:
    """Refuses to go on when a member's directory holds a run made with other settings than the
    experiment now gives it (its config or an override changed since): skipping it as finished,
    or resuming it, would report a run that the experiment file does not describe."""
    stale = []
    for member in members:
        recorded = read_status(os.path.join(workdir, member.name))
        if "overrides" not in recorded:
            continue
        now = json.loads(json.dumps({**member.overrides, **extra}))
        changed = [
            f"{key}: {recorded['overrides'].get(key)!r} -> {now.get(key)!r}"
            for key in sorted(set(now) | set(recorded["overrides"]))
            if now.get(key) != recorded["overrides"].get(key)
        ]
        if recorded.get("config") != member.config:
            changed.insert(0, f"config: {recorded.get('config')!r} -> {member.config!r}")
        if changed:
            stale.append(f"{member.name} ({'; '.join(changed)})")
    if stale:
        raise UserError(
            f"{workdir}: {len(stale)} member(s) ran with other settings than the experiment now "
            f"gives them: {', '.join(stale)}; move their directories away to train them again"
        )


def check_members(members: list[Member], extra: dict) -> None:
    """Every member's config, loaded as ``segjax.train`` loads it (the file, its variant and the
    overrides) and checked by ``segjax.validation``, before the first member trains: a bad one is
    refused up front, naming the member and the key. (Nothing here starts JAX's backends.)"""
    from absl import flags as absl_flags
    from ml_collections import config_flags

    from segjax.validation import check_config

    problems = []
    for member in members:
        argv = ["run", *member.train_arguments(extra)]
        values = absl_flags.FlagValues()
        config_flags.DEFINE_config_file(
            "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
        )
        try:
            values(argv)
        except (ValueError, absl_flags.Error, AttributeError, KeyError, TypeError) as error:
            problems.append(f"member {member.name!r}: {cli.describe_flag_error(argv, error)}")
            continue
        try:
            check_config(values.config)
        except ValueError as error:  # ConfigError, or the factory's
            problems.append(f"member {member.name!r}: {error}")
    if problems:
        raise UserError("; ".join(problems) + " (no member was run)")


if __name__ == "__main__":
    cli.run(main, define_flags)
