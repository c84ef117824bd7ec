"""Chooses the U-Net baseline's object splitting on the validation split, not the test split.

    W=runs/instances
    python experiments/instances/splitter_choice.py \\
        --workdirs $W/unet_resnet18_watershed,$W/unet_ghostnet100_watershed \\
        --out experiments/instances/splitter_choice.md

For each semantic run: one forward pass over the validation images (foreground probabilities
kept on the host), then every setting of the grid scored as ``segjax.evaluate --instances``
scores it: the watershed at each ``--seed_heights`` (h-maxima of the distance transform, in
pixels) and connected components, each with each ``--min_areas`` (objects of fewer pixels
dropped). Prints and writes a table of validation DSB score and mask AP per setting, and each
run's best setting by DSB score, with the ``segjax.evaluate`` flags that apply it to the test
split.
"""

import itertools
import json
import os

from absl import flags

from segjax import cli
from segjax.errors import UserError
from segjax.instances import ImageInstances, Splitter, jit_instances, label_map, model_outputs
from segjax.instances import score as score_instances
from segjax.models import is_instance_model
from segjax.runs import restore_for_evaluation
from segjax.workdir import write_atomically


def define_flags() -> None:
    flags.DEFINE_list("workdirs", None, "semantic runs (comma-separated)")
    flags.DEFINE_string("split", "validation", "the split the choice is made on")
    flags.DEFINE_list(
        "seed_heights", ["1", "2", "3", "4", "6", "8", "12", "16"], "watershed seed heights"
    )
    flags.DEFINE_list("min_areas", ["1", "16"], "least object areas, pixels")
    flags.DEFINE_string("out", None, "a Markdown file for the table (and its .json)")


def grid(seed_heights, min_areas) -> list[Splitter]:
    watershed = [
        Splitter("watershed", min_area=a, seed_height=h)
        for h, a in itertools.product(seed_heights, min_areas)
    ]
    return watershed + [Splitter("components", min_area=a) for a in min_areas]


def study(workdir: str, split: str, splitters: list[Splitter]) -> list[dict]:
    """One row per splitter: its metrics on ``split`` (``segjax.instances.score``)."""
    run, state, step = restore_for_evaluation(workdir)
    if is_instance_model(run.model):
        raise UserError(
            f"{workdir} is a {run.config.model.arch} run; this study is for semantic runs"
        )
    fn = jit_instances(run, splitters[0])
    images = list(model_outputs(fn, state, run, split))
    print(f"{workdir}: step {step}, {len(images)} {split} images")
    rows = []
    for splitter in splitters:
        results = []
        for index, example, true, foreground in images:
            labels, scores, _ = label_map(foreground, true.shape, splitter)
            results.append(ImageInstances(index, example["name"], true, labels, scores, 0.0))
        metrics, _ = score_instances(results)
        rows.append(
            {
                "run": os.path.basename(os.path.normpath(workdir)),
                "method": splitter.method,
                "seed_height": splitter.seed_height if splitter.method == "watershed" else None,
                "min_area": splitter.min_area,
                **{k: metrics[k] for k in ("dsb_score", "mask_ap", "mask_ap50")},
                "objects": metrics["predicted_objects_per_image"],
                "true_objects": metrics["true_objects_per_image"],
            }
        )
        print(
            f"  {_setting(rows[-1])}: DSB {metrics['dsb_score']:.4f}, AP {metrics['mask_ap']:.4f}"
        )
    return rows


def _setting(row: dict) -> str:
    height = f" h={row['seed_height']:g}" if row["seed_height"] is not None else ""
    return f"{row['method']}{height} min_area={row['min_area']}"


def table(rows: list[dict], split: str) -> str:
    lines = [
        f"| run | setting | {split} DSB | mask AP | AP50 | objects/img (true) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {_setting(row)} | {row['dsb_score']:.4f} | {row['mask_ap']:.4f} | "
            f"{row['mask_ap50']:.4f} | {row['objects']:.1f} ({row['true_objects']:.1f}) |"
        )
    lines.append("")
    for name in dict.fromkeys(row["run"] for row in rows):
        best = max(
            (r for r in rows if r["run"] == name and r["method"] == "watershed"),
            key=lambda r: r["dsb_score"],
        )
        lines.append(
            f"- {name}: best watershed by {split} DSB: {_setting(best)} "
            f"(`segjax.evaluate --instances=watershed,components "
            f"--seed_height={best['seed_height']:g} --min_area={best['min_area']}`)"
        )
    return "\n".join(lines) + "\n"


def _numbers(name: str, values: list[str], kind) -> list:
    """A list flag's entries as positive numbers, or a UserError naming the flag and entry."""
    try:
        numbers = [kind(value) for value in values]
    except ValueError:
        raise UserError(f"--{name}={','.join(values)}: entries must be {kind.__name__}s") from None
    if not numbers or min(numbers) <= 0:
        raise UserError(f"--{name}={','.join(values)}: give one or more numbers above 0")
    return numbers


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdirs")
    args = flags.FLAGS
    splitters = grid(
        _numbers("seed_heights", args.seed_heights, float),
        _numbers("min_areas", args.min_areas, int),
    )
    rows = [row for workdir in args.workdirs for row in study(workdir, args.split, splitters)]
    text = table(rows, args.split)
    print("\n" + text)
    if args.out:
        write_atomically(args.out, text)
        write_atomically(os.path.splitext(args.out)[0] + ".json", json.dumps(rows, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
