"""Converts weights between PyTorch layouts and segjax, reporting what maps to what.

PyTorch -> segjax (a torchvision / timm ImageNet classifier, or an smp Unet / UnetPlusPlus):

    python -m segjax.convert --from resnet34.safetensors --arch classifier \\
        --encoder resnet34 --to resnet34_segjax.safetensors
    python -m segjax.convert --from resnet34.safetensors --arch unet --encoder resnet34

An encoder file into a segmentation arch fills the encoder (``--scope encoder``, the default for
classifier files). Without ``--to`` the command only checks and reports the mapping.

segjax -> PyTorch (a training workdir's checkpoint, or a file this command wrote):

    python -m segjax.convert --from runs/x --to unet_resnet34_smp.safetensors
    python -m segjax.convert --from runs/x --scope encoder --to encoder.safetensors

writes smp's keys for a whole U-Net / U-Net++ on a ResNet (``smp.Unet(...).load_state_dict``),
or torchvision's / timm's for a classifier or an encoder alone.
"""

import json
import os

import jax
import numpy as np
from absl import flags

from segjax import cli
from segjax.errors import UserError
from segjax.models.factory import ARCHS, ENCODERS, create_classifier, create_model
from segjax.models.weights import (
    export_state_dict,
    load_weights,
    read_state_dict,
    sha256,
    write_safetensors,
)
from segjax.models.weights.transfer import (
    SEGJAX_FORMAT,
    abstract_variables,
    load_segjax_weights,
    segjax_tensors,
)


def build(arch: str, encoder: str | None, num_classes: int | None, in_channels: int, options):
    try:
        if arch == "classifier":
            return create_classifier(encoder, num_classes or 1000, **options)
        return create_model(arch, encoder, num_classes or 1, in_channels, **options)
    except (ValueError, TypeError) as error:
        raise UserError(str(error)) from None


def zeros_like_model(model, in_channels: int) -> dict:
    abstract = abstract_variables(model, in_channels)
    return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)


def import_torch(source: str, args, tensors: dict) -> str:
    if not args.arch or (args.arch != "classifier" and args.arch not in ARCHS):
        raise UserError(f"--arch={args.arch!r}: choose one of {[*ARCHS, 'classifier']}")
    options = dict(cli.parse_option(text) for text in args.option)
    model = build(args.arch, args.encoder, args.num_classes, args.in_channels, options)
    variables, report = load_weights(
        model,
        zeros_like_model(model, args.in_channels),
        tensors,
        source,
        scope=args.scope or None,
        head=args.head,
    )
    lines = [report.summary()]
    if args.to:
        metadata = {
            "format": SEGJAX_FORMAT,
            "arch": args.arch,
            "encoder": args.encoder or "",
            "num_classes": str(args.num_classes or (1000 if args.arch == "classifier" else 1)),
            "in_channels": str(args.in_channels),
            "options": json.dumps(options),
            "source": os.path.abspath(source),
            "source_sha256": sha256(source),
            "scope": report.target,
        }
        write_safetensors(args.to, segjax_tensors(variables), metadata)
        lines.append(f"wrote segjax weights ({len(metadata)} metadata fields) to {args.to}")
    return "\n".join(lines)


def _from_segjax_file(source: str, tensors: dict, metadata: dict):
    options = json.loads(metadata.get("options", "{}"))
    in_channels = int(metadata["in_channels"])
    model = build(
        metadata["arch"],
        metadata["encoder"] or None,
        int(metadata["num_classes"]),
        in_channels,
        options,
    )
    variables, _ = load_segjax_weights(zeros_like_model(model, in_channels), tensors, source)
    return model, variables


def _from_workdir(workdir: str, which: str):
    from segjax.runs import restore_for_evaluation

    run, state, step = restore_for_evaluation(workdir, which, need_data=False)
    variables = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state.variables)
    print(f"restored step {step} of {workdir}")
    return run.model, variables


def export_torch(model, variables, args) -> str:
    if not args.to:
        raise UserError("--to is required to write PyTorch weights (OUT.safetensors)")
    tensors, layout = export_state_dict(model, variables, args.scope or "model")
    parameters = sum(
        v.size
        for k, v in tensors.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    write_safetensors(args.to, tensors, {"format": "pt", "layout": layout})
    return f"wrote {len(tensors)} tensors ({parameters:,} values) in {layout}'s keys to {args.to}"


def define_flags() -> None:
    flags.DEFINE_string("from", None, "a PyTorch weights file, a segjax weights file or a workdir")
    flags.DEFINE_string("to", None, "the .safetensors file to write")
    flags.DEFINE_string("arch", None, f"PyTorch files: one of {[*ARCHS, 'classifier']}")
    flags.DEFINE_string("encoder", None, f"PyTorch files: one of {list(ENCODERS)}")
    flags.DEFINE_integer("num_classes", None, "default 1 (segmentation), 1000 (classifier)")
    flags.DEFINE_integer("in_channels", 3, "input channels of the segjax model")
    flags.DEFINE_multi_string("option", [], "KEY=VALUE: a create_model option")
    flags.DEFINE_enum("scope", "", ["", "model", "encoder"], "'' = from the file's keys")
    flags.DEFINE_bool(
        "head", True, "classifiers: --nohead keeps the model's head, ignores the file's"
    )
    flags.DEFINE_string("checkpoint", "best", "workdirs: best, latest or a step")


def main(argv) -> int:
    cli.positional(argv)
    cli.require("from")
    args = flags.FLAGS
    source = getattr(args, "from")
    if args.to and not args.to.endswith(".safetensors"):
        raise UserError(f"--to={args.to!r}: the output is a .safetensors file")
    if os.path.isdir(source):
        model, variables = _from_workdir(source, args.checkpoint)
        print(export_torch(model, variables, args))
        return 0
    tensors, metadata = read_state_dict(source)
    if metadata.get("format") == SEGJAX_FORMAT:
        model, variables = _from_segjax_file(source, tensors, metadata)
        print(export_torch(model, variables, args))
    else:
        print(import_torch(source, args, tensors))
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
