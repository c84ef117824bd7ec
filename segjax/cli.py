"""What every segjax command shares: absl flags (``--snake_case``), and one rule for how it ends.

    python -m segjax.train --config configs/resnet_unet.py --workdir runs/x

A command's ``main(argv)`` runs under ``run``, which turns the errors a user can cause into one
``error: ...`` line on stderr and an exit code (``segjax.errors``): 0 done; 2 refused, nothing
written (bad flag, config, data or workdir); 1 started and failed (non-finite loss, no readable
checkpoint, an I/O error); 130 interrupted by Ctrl-C before any work could be saved. Any other
exception is a bug: its traceback is printed, then the one-line summary, exit 1.
"""

import ast
import contextlib
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable

from absl import app, flags, logging

from segjax import logs, xla_flags
from segjax.errors import RunError, UserError


class _LineTracker:
    """stderr, remembering whether its last write ended a line: a progress bar (tfds' tqdm)
    leaves its line open, or erased with carriage returns, and the error line must still
    start a line of its own for a script that looks for ``^error:``."""

    def __init__(self, stream):
        self._stream = stream
        self.line_open = False

    def write(self, text: str) -> int:
        if text:
            self.line_open = not text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    # Equal to the stream it wraps: absl's log handler, which holds that stream, compares it
    # with sys.stderr to decide whether to write a record a second time.
    def __eq__(self, other) -> bool:
        return other is self or other is self._stream

    def __hash__(self) -> int:
        return hash(self._stream)


def run(main: Callable[[list[str]], int | None], define_flags: Callable[[], None] | None = None):
    """Sets up the process as a command (segjax's XLA flags, ``segjax.logs``), defines the
    command's flags, parses them (``parse_flags``) and runs ``main`` under the exit-code rule."""
    if not isinstance(sys.stderr, _LineTracker):
        sys.stderr = _LineTracker(sys.stderr)
    xla_flags.apply_defaults()  # before JAX starts its backends, i.e. before main
    logs.quiet_routine_messages()
    if define_flags is not None:
        define_flags()
    app.run(lambda argv: sys.exit(guarded(main, argv)), flags_parser=parse_flags)


def guarded(main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """``main(argv)``'s exit code, errors printed as one line (see the module docstring)."""
    logging.set_verbosity(logging.WARNING)
    try:
        return int(main(argv) or 0)
    except (UserError, RunError) as error:
        return fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted (Ctrl-C)", 130)
    except OSError as error:  # a full disk, a missing permission: the environment, not a bug
        return fail(str(error), 1)
    except Exception as error:  # a bug: keep the traceback, say so last
        traceback.print_exc()
        return fail(f"internal error (a bug in segjax): {type(error).__name__}: {error}", 1)


def fail(message: str, code: int) -> int:
    sys.stdout.flush()
    if getattr(sys.stderr, "line_open", False):  # after a progress bar: a line of its own
        sys.stderr.write("\n")
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def positional(argv: list[str], names: tuple[str, ...] = ()) -> list[str]:
    """The command's positional arguments, exactly ``names`` of them (absl's argv[0] dropped)."""
    given = argv[1:]
    if len(given) != len(names):
        wanted = " ".join(n.upper() for n in names) or "no positional arguments"
        raise UserError(f"expected {wanted}, got {given or 'none'}")
    return given


def parse_size(text: str, multiple: int = 1, flag: str = "--size") -> tuple[int, int]:
    """'256' or '256x320' -> (height, width): positive, and multiples of ``multiple``."""
    height, _, width = str(text).lower().partition("x")
    try:
        size = int(height), int(width or height)
    except ValueError:
        raise UserError(f"{flag}={text!r}: expected N or HxW, e.g. 256 or 256x320") from None
    if min(size) < 1:
        raise UserError(f"{flag}={text!r}: height and width must be positive")
    if size[0] % multiple or size[1] % multiple:
        raise UserError(f"{flag}={text!r}: height and width must be multiples of {multiple}")
    return size


def parse_option(text: str) -> tuple[str, object]:
    """'key=value' -> (key, the value as a Python literal, else the string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--option {text!r}: expected key=value, e.g. prune_level=2")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def check_output(path: str, kind: str, flag: str = "--output") -> None:
    """Refuses, before any slow work, an output that cannot be written: ``kind`` 'file' (not an
    existing directory, its folder writable or creatable) or 'directory' (not an existing file,
    itself or its nearest existing parent writable)."""
    if kind == "file" and os.path.isdir(path):
        raise UserError(f"{flag}={path}: is a directory; give the file to write")
    if kind == "directory" and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag}={path}: is a file; give a directory for the outputs")
    folder = os.path.abspath(path if kind == "directory" else os.path.dirname(path) or ".")
    missing = []  # the folders the probe creates, deepest first, removed again afterwards
    existing = folder
    while not os.path.exists(existing):
        missing.append(existing)
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{flag}={path}: {existing} is not a directory")
    try:  # a real write: os.access says yes to root, where /proc or a read-only mount says no
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".segjax-probe-"):
            pass
    except OSError as error:
        raise UserError(f"{flag}={path}: cannot be written ({error.strerror or error})") from None
    finally:
        for created in missing:
            with contextlib.suppress(OSError):
                os.rmdir(created)


def require(*names: str) -> None:
    """A one-line error for required flags left out."""
    missing = [f"--{name}" for name in names if flags.FLAGS[name].value in (None, "")]
    if missing:
        raise UserError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a missing or failing ``--config`` file and a bad override (unknown key,
    wrong type) end with ``error: ...`` naming it and exit code 2, not a traceback. A key given
    twice takes its last value (ml_collections would join a tuple's repeats into one tuple)."""
    argv = last_override_wins(argv)
    path = config_path(argv)
    if path is not None and not os.path.isfile(path):
        sys.exit(fail(f"--config {path}: no such file", 2))
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as error:
        sys.exit(fail(describe_flag_error(argv, error), 2))
    except Exception as error:  # the config file itself: a syntax error, a bad name or import
        if path is None:
            raise
        sys.exit(fail(describe_config_error(path, error), 2))


def describe_config_error(path: str, error: Exception) -> str:
    """``--config PATH: line N: Kind: message`` for an error raised loading a config file, the
    line being the file's own (the deepest frame in it; a SyntaxError's own line)."""
    line = error.lineno if isinstance(error, SyntaxError) else None
    if isinstance(error, SyntaxError):
        message = error.msg
    else:
        message = str(error)
        for frame, lineno in traceback.walk_tb(error.__traceback__):
            if os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
                line = lineno
    where = f"line {line}: " if line else ""
    return f"--config {path}: {where}{type(error).__name__}: {message}"


def last_override_wins(argv: list[str]) -> list[str]:
    """``argv`` with only the last of repeated ``--config.<key>`` overrides."""
    groups: list[tuple[str | None, list[str]]] = []
    index = 1
    while index < len(argv):
        argument = argv[index]
        name = argument.split("=")[0].removeprefix("--no").removeprefix("--")
        if name.startswith("config.") and argument.startswith("--"):
            alone = "=" in argument or index + 1 >= len(argv) or argv[index + 1][:2] == "--"
            group = [argument] if alone else argv[index : index + 2]
            groups.append((name, group))
            index += len(group)
        else:
            groups.append((None, [argument]))
            index += 1
    last = {name: position for position, (name, _) in enumerate(groups) if name}
    kept = [g for position, (name, g) in enumerate(groups) if not name or last[name] == position]
    return [argv[0], *(argument for group in kept for argument in group)]


def config_path(argv: list[str]) -> str | None:
    for index, argument in enumerate(argv[1:], start=1):
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1].split(":")[0]
        if argument.startswith("--config="):
            return argument.removeprefix("--config=").split(":")[0]
    return None


def describe_flag_error(argv: list[str], error: Exception) -> str:
    """One line naming the flag at fault; for a misspelt config key, the key that does not
    exist and ml_collections' nearest existing one."""
    text = str(error).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":  # a KeyError's quotes
        text = text[1:-1]
    text = text.replace("\\n", "\n").replace("\\'", "'")  # a KeyError's repr inside a message
    if "Traceback" in text:  # an exception raised inside the config file's get_config
        return f"--config {config_path(argv)}: {text.strip().splitlines()[-1]}"
    suggestion = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    for argument in (a for a in argv[1:] if a.startswith("--config.")):
        key = argument.split("=")[0].removeprefix("--config.")
        parts = key.split(".")
        named = [i for i, part in enumerate(parts) if re.search(rf"\b{re.escape(part)}\b", text)]
        if not named:
            continue
        if isinstance(error, AttributeError | KeyError):
            at = named[0]
            missing = ".".join(parts[: at + 1])
            hint = " (see the config file)"
            if suggestion and suggestion.group(2) == parts[at]:
                hint = f"; did you mean {'.'.join([*parts[:at], suggestion.group(1)])!r}?"
            return f"{argument}: the config has no key {missing!r}{hint}"
        return f"{argument}: {' '.join(text.split(': ', 1)[-1].split())}"
    return " ".join(text.split())
