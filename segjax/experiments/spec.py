"""An experiment file: ``get_experiment()`` returns an ``Experiment``, a list of runs each named by
a config file and ``--config.`` overrides, like flax example variants or big_vision sweeps::

    from segjax.experiments.spec import Experiment, Member

    def get_experiment():
        common = {"total_steps": 600, "batch_size": 8}
        return Experiment(
            name="backbones",
            members=[
                Member("unet_resnet34", "configs/resnet_unet.py:dsb2018",
                       {**common, "model.encoder": "resnet34"}),
                ...
            ],
            eval_split="test",
            highlight_class="nucleus",  # its IoU gets a column of the report
        )

A file may define several experiments that share a protocol: ``get_experiment(variant)``, named
as config files name theirs, ``experiments/founding.py:tuning``.
"""

import dataclasses
import importlib.util
import os
import re
from collections.abc import Callable
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
KINDS = ("semantic", "instances")


@dataclasses.dataclass(frozen=True)
class Member:
    name: str  # also its directory under the sweep's workdir
    config: str  # a config file, with an optional ':variant'
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # config key -> value
    eval_flags: tuple[str, ...] = ()  # extra segjax.evaluate flags, e.g. ('--instances=watershed',)

    def train_arguments(self, extra: dict[str, Any] | None = None) -> list[str]:
        """The ``segjax.train`` flags of this run; ``extra`` (the runner's ``--set``) wins."""
        merged = {**self.overrides, **(extra or {})}
        return ["--config", self.config] + [
            f"--config.{key}={format_value(value)}" for key, value in merged.items()
        ]


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    members: list[Member]
    eval_split: str = "test"
    size: int = 256  # square input size of the MACs and inference-latency columns
    highlight_class: str | None = None  # a class whose IoU gets its own column, e.g. 'nucleus'
    kind: str = "semantic"  # or 'instances': DSB score and mask AP columns (instance_report)
    # Report extras: ``curves`` draws every member's validation curve and tabulates its
    # convergence (segjax/experiments/curves.py; an instance member's by its own best_metric);
    # ``comparisons`` names model pairs (member names without _seedN; an instance sweep's U-Net
    # by its method's row name) to test over the eval split's images (paired.py: the highlighted
    # class's IoU, or for instances the DSB score); ``tables(rows, workdir, out)`` returns the
    # experiment's own tables as {file name: text}.
    curves: bool = False
    comparisons: tuple[tuple[str, str], ...] = ()
    tables: Callable[[list[dict], str, str], dict[str, str]] | None = None


def format_value(value: Any) -> str:
    """A value as ml_collections' command-line override syntax expects it."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def load_module(file: str, name: str = "segjax_experiment"):
    """Imports a Python file that is not on the import path (an experiment file, a script)."""
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(path: str) -> Experiment:
    """Imports ``path`` (``file.py`` or ``file.py:variant``) and checks what its
    ``get_experiment()`` (or ``get_experiment(variant)``) returns; errors name the file."""
    file, _, variant = path.partition(":")
    if not os.path.isfile(file):
        raise ValueError(f"{file}: no such experiment file")
    module = load_module(file)
    if not hasattr(module, "get_experiment"):
        raise ValueError(f"{file}: defines no get_experiment()")
    try:
        experiment = module.get_experiment(variant) if variant else module.get_experiment()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(experiment, Experiment) or not experiment.members:
        raise ValueError(f"{path}: get_experiment() must return an Experiment with members")
    names = [m.name for m in experiment.members]
    for name in names:
        if not NAME.match(name):
            raise ValueError(f"{path}: member name {name!r} must be letters, digits, _ . -")
    if experiment.kind not in KINDS:
        raise ValueError(f"{path}: kind={experiment.kind!r}; choose one of {list(KINDS)}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: member names {duplicates} appear more than once")
    for member in experiment.members:
        config_file = member.config.split(":")[0]
        if not os.path.isfile(config_file):
            raise ValueError(f"{path}: member {member.name!r}: no config file {config_file!r}")
    return experiment
