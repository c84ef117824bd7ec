"""Parameters, MACs and a per-layer table of a model, from shapes alone (``jax.eval_shape``).

MACs are the multiply-accumulates of convolutions, transposed convolutions and dense layers, per
image: the convention of published figures (ResNet-50: 4.09 G at 224x224). Parameters are the
trainable ones (the ``params`` collection); BatchNorm running statistics are not counted.

    python -m segjax.models.summary --arch unetpp --encoder ghostnet_100 --size 256
    python -m segjax.models.summary --arch classifier --encoder resnet50 --size 224
    python -m segjax.models.summary --all --size 256      # the model table of docs/models.md
"""

from absl import flags

from segjax import cli
from segjax.errors import UserError
from segjax.models.counting import format_macs, summarize
from segjax.models.factory import ARCHS, ENCODERS, create_classifier, create_model


def model_table(height: int, width: int) -> str:
    """A Markdown table of every (arch, encoder) pair at its default options."""
    lines = [f"| arch | encoder | params | MACs at {height}x{width} |", "|---|---|---:|---:|"]
    pairs = [(a, e) for a in ("unet", "unetpp") for e in ENCODERS]
    pairs += [("unet_paper", None), ("unetpp_paper", None)]
    for arch, encoder in pairs:
        s = summarize(create_model(arch, encoder), (1, height, width, 3))
        lines.append(f"| {arch} | {encoder or '(plain)'} | {s.params:,} | {format_macs(s.macs)} |")
    return "\n".join(lines)


def describe(
    arch: str,
    encoder: str | None,
    size: tuple[int, int],
    num_classes: int | None = None,
    in_channels: int = 3,
    depth: int | None = None,
    options: dict | None = None,
) -> str:
    """The per-layer table and totals of a model (``arch='classifier'`` for an encoder's
    ImageNet classifier), as the command prints them."""
    height, width = size
    options = dict(options or {})
    if arch == "classifier":
        model = create_classifier(encoder, num_classes or 1000, **options)
    else:
        model = create_model(arch, encoder, num_classes or 1, in_channels, **options)
    summary = summarize(model, (1, height, width, in_channels))
    name = " / ".join(filter(None, [arch, encoder]))
    return (
        f"{name} at {height}x{width}x{in_channels}\n\n{summary.table(depth)}\n\n"
        f"params: {summary.params:,} (trainable)\n"
        f"MACs:   {format_macs(summary.macs)} ({summary.macs:,}) per image"
    )


def define_flags() -> None:
    flags.DEFINE_string("arch", "unet", f"one of {[*ARCHS, 'classifier']}")
    flags.DEFINE_string("encoder", None, f"one of {list(ENCODERS)}")
    flags.DEFINE_string("size", "256", "N or HxW")
    flags.DEFINE_integer("num_classes", None, "default 1 for segmentation, 1000 for classifiers")
    flags.DEFINE_integer("in_channels", 3, "input channels")
    flags.DEFINE_integer("depth", None, "group the table by module path this many levels deep")
    flags.DEFINE_multi_string("option", [], "KEY=VALUE: a create_model option, e.g. prune_level=2")
    flags.DEFINE_bool("all", False, "print a Markdown table of all models instead")


def main(argv) -> int:
    cli.positional(argv)
    args = flags.FLAGS
    try:
        size = cli.parse_size(args.size)
        if args.all:
            print(model_table(*size))
            return 0
        options = dict(cli.parse_option(text) for text in args.option)
        print(
            describe(
                args.arch,
                args.encoder,
                size,
                args.num_classes,
                args.in_channels,
                args.depth,
                options,
            )
        )
    except ValueError as error:  # a bad name or option: the factory's message names it
        raise UserError(str(error)) from None
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
