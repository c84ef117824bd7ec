"""The models of experiments/nested_pyramid.py from shapes alone, before anything trains:
parameters, MACs of one 256x256 forward pass, and the encoder + pyramid's MACs (what the FPN of
equal compute is sized against), each relative to the nested pyramid's on the same encoder.

    python experiments/nested_pyramid/model_table.py --out experiments/nested_pyramid/models.md
"""

from absl import flags

from segjax import cli
from segjax.experiments.instance_report import model_figures
from segjax.experiments.spec import load_module
from segjax.workdir import write_atomically

SIZE = 256


def define_flags() -> None:
    flags.DEFINE_string("out", None, "a Markdown file for the table")


def config_of(config_path: str, overrides: dict):
    file, _, variant = config_path.partition(":")
    config = load_module(file, "nested_pyramid_config").get_config(variant or None)
    config.update_from_flattened_dict(overrides)
    return config


def table() -> str:
    experiment = load_module("experiments/nested_pyramid.py", "nested_pyramid")
    figures = {}
    for name, (config_path, overrides) in experiment.MODELS.items():
        params, macs, trunk = model_figures(config_of(config_path, overrides), SIZE)
        figures[name] = (params, macs, trunk)
    lines = [
        "| model | params | GMACs@256 | encoder+pyramid GMACs | vs the nested pyramid's |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (params, macs, trunk) in figures.items():
        encoder = name.rsplit("_", 1)[1]
        nested = figures.get(f"maskrcnn_unetpp_{encoder}")
        relative = f"{trunk / nested[2]:.3f}" if nested and name.startswith("mask") else "-"
        lines.append(f"| {name} | {params:,} | {macs / 1e9:.2f} | {trunk / 1e9:.2f} | {relative} |")
    return "\n".join(lines) + "\n"


def main(argv) -> int:
    cli.positional(argv)
    text = table()
    print(text)
    if flags.FLAGS.out:
        write_atomically(flags.FLAGS.out, text)
        print(f"wrote {flags.FLAGS.out}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
