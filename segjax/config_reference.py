"""Every config key with its default, what it may be and what it means, from the two places
that define them, never written a third time: the defaults and their comments in
``segjax/defaults.py`` and the allowed values of ``segjax/validation.py``'s rules.

    python -m segjax.config_reference > keys.md   # the docs build writes it the same way

A key's meaning is the comment on its line in ``base_config`` or the comment block just above it;
a create_model option says which architectures take it; a loss weight or option names its loss.
"""

import ast
import inspect
import sys

from segjax import defaults
from segjax.validation import _schema, flatten

# The local names base_config gives its sub-configs.
ALIASES = {"config": "", "model": "model.", "opt": "optimizer.", "data": "data."}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _key(target: str) -> str | None:
    head, _, rest = target.partition(".")
    if head not in ALIASES or not rest:
        return None
    return (ALIASES[head] + rest).removeprefix("config.")


def comments() -> dict[str, str]:
    """Key -> its comment in ``base_config``'s unconditional part (before the variants)."""
    source = inspect.getsource(defaults.base_config)
    lines = source.splitlines()
    function = ast.parse(source).body[0]
    found: dict[str, str] = {}
    for statement in function.body:
        if isinstance(statement, ast.If):
            break  # the variants: their values are not the defaults
        if not isinstance(statement, ast.Assign):
            continue
        targets = []
        for target in statement.targets:
            elements = target.elts if isinstance(target, ast.Tuple) else [target]
            targets += [t for t in map(_dotted, elements) if t]
        line = lines[statement.lineno - 1]
        trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        block, index = [], statement.lineno - 2
        while index >= 0 and lines[index].strip().startswith("#"):
            block.insert(0, lines[index].strip().lstrip("#").strip())
            index -= 1
        text = " ".join(part for part in (" ".join(block), trailing) if part)
        for target in targets:
            key = _key(target)
            if key and text:
                found[key] = text
    return found


def _meaning(key: str, notes: dict[str, str], model_archs: dict[str, list[str]]) -> str:
    if key in notes:
        return notes[key]
    parent = key.rsplit(".", 1)[0]
    if key.startswith("loss.weights."):
        return f"weight of the {key.rsplit('.', 1)[1]} loss (0 = off)"
    if key.startswith("loss.options."):
        parts = key.split(".", 3)
        if len(parts) == 3:
            return f"the {parts[2]} loss has no options"
        return f"option {parts[3]} of the {parts[2]} loss"
    if key.startswith("model.") and key in model_archs:
        return f"create_model option (archs: {', '.join(model_archs[key])})"
    return notes.get(parent, "")


def rows() -> list[tuple[str, str, str, str]]:
    """(key, default, allowed, meaning) of every key of the base config, sorted."""
    from segjax.models.factory import ARCHS

    config = defaults.base_config()
    values = flatten(config.to_dict())
    schema = _schema()
    notes = comments()
    model_archs: dict[str, list[str]] = {}
    for arch, options in ARCHS.items():
        for option in options:
            model_archs.setdefault(f"model.{option}", []).append(arch)
    out = []
    for key in sorted(values):
        allowed = schema[key][1] if key in schema else ""
        out.append((key, repr(values[key]), allowed, _meaning(key, notes, model_archs)))
    return out


def markdown() -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| key | default | allowed | meaning |",
        "|---|---|---|---|",
    ]
    for key, default, allowed, meaning in rows():
        lines.append(f"| `{key}` | `{cell(default)}` | {cell(allowed)} | {cell(meaning)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
