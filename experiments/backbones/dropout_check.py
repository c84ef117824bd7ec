"""Does a trained run predict differently with dropout on (as in training) and off (as evaluated)?

    python experiments/backbones/dropout_check.py --workdir runs/backbones/unetpp_paper \\
        [--checkpoint 250]

Restores the run's evaluated checkpoint (or ``--checkpoint``) and, on the first validation
images, prints pixel accuracy, the predicted and true foreground fractions and the mean logit of
each class, once in eval mode (dropout off: what ``segjax.evaluate`` measures) and once in train
mode (dropout on, one sample). The paper models put dropout 0.5 after every convolution and have
no BatchNorm; a large gap between the two modes explains a model whose training loss fell while
its evaluated accuracy did not.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from segjax import cli
from segjax.data import eval_dataset
from segjax.runs import restore_for_evaluation


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "a training run's workdir")
    flags.DEFINE_string("checkpoint", "best", "best (as evaluated), latest, or a step number")
    flags.DEFINE_integer("batches", 2, "validation batches of 4 images")


def main(argv) -> int:
    cli.positional(argv)
    cli.require("workdir")
    args = flags.FLAGS
    run, state, step = restore_for_evaluation(args.workdir, args.checkpoint)
    variables = state.variables

    @jax.jit
    def logits(x, rng):
        # Train mode (dropout on, one sample); BatchNorm's updated statistics are discarded.
        train, _ = run.model.apply(
            variables, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
        )
        evaluated = run.model.apply(variables, x, train=False)
        last = lambda out: out[-1] if isinstance(out, list | tuple) else out  # noqa: E731
        return last(evaluated), last(train)

    print(f"{args.workdir}: checkpoint of step {step}, validation images")
    batches = eval_dataset(run.dataset, "validation", run.config.data, 4, row_multiple=1)
    for index, batch in enumerate(batches):
        if index == args.batches:
            break
        valid = batch["valid"] > 0
        label = batch["label"][valid]
        modes = logits(batch["image"], jax.random.PRNGKey(index))
        for mode, out in zip(("dropout off (eval)", "dropout on (train)"), modes, strict=True):
            predicted = np.asarray(jnp.argmax(out, -1))[valid]
            foreground = f"{np.mean(predicted > 0):.3f} / true {np.mean(label > 0):.3f}"
            mean_logit = np.asarray(out)[valid].mean(axis=0)
            print(
                f"  batch {index}, {mode}: pixel accuracy {np.mean(predicted == label):.3f}, "
                f"foreground predicted {foreground}, "
                f"mean logits {np.array2string(mean_logit, precision=3)}"
            )
    return 0


if __name__ == "__main__":
    cli.run(main, define_flags)
