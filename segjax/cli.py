"""Command-line plumbing shared by the entry points: flag errors as one clear line."""

import os
import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a missing or failing ``--config`` file and a bad override (unknown key,
    wrong type) end with ``error: ...`` naming it and exit code 2, not a traceback."""
    path = config_path(argv)
    if path is not None and not os.path.isfile(path):
        _fail(f"--config {path}: no such file")
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as error:
        _fail(describe_flag_error(argv, error))


def config_path(argv: list[str]) -> str | None:
    for index, argument in enumerate(argv[1:], start=1):
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1].split(":")[0]
        if argument.startswith("--config="):
            return argument.removeprefix("--config=").split(":")[0]
    return None


def describe_flag_error(argv: list[str], error: Exception) -> str:
    text = str(error).strip().strip("\"'")
    if "Traceback" in text:  # an exception raised inside the config file's get_config
        return f"--config {config_path(argv)}: {text.strip().splitlines()[-1]}"
    for argument in (a for a in argv[1:] if a.startswith("--config.")):
        key = argument.split("=")[0].removeprefix("--config.")
        if key.split(".")[-1] in text:
            if isinstance(error, AttributeError | KeyError):
                return f"{argument}: the config has no key {key!r} (see the config file)"
            return f"{argument}: {text.split(': ', 1)[-1]}"
    return text


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
