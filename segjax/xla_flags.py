"""XLA flags segjax sets by default, because they make its models faster (measured in
benchmarks/README.md, "XLA:CPU flags").

``--xla_cpu_experimental_ynn_fusion_type=`` turns off XLA:CPU's YNNPACK fusions, which otherwise
take every convolution, dot and reduction of the train step: XLA's own kernels are faster for
segjax's models on CPU (training 4-6%, batch-1 inference 12-21%, and less executable memory).
The flag is CPU-only; GPU and TPU ignore it.

Flags only take effect if set before JAX initialises its backends (its first computation), so
the entry points apply them before any work: ``segjax.cli.run`` (every ``python -m segjax.*``
command and the benchmarks); importing segjax leaves a program's environment alone. A flag
already in ``XLA_FLAGS`` is left as the user set it; ``SEGJAX_XLA_DEFAULTS=0`` turns the
defaults off. They are applied only under the jaxlib
versions they were measured with (XLA aborts on a flag it does not know).
"""

import importlib.metadata
import os

DEFAULT_FLAGS = {"--xla_cpu_experimental_ynn_fusion_type": ""}
MEASURED_JAXLIB = "0.10."


def with_defaults(xla_flags: str) -> str:
    """``xla_flags`` with each default flag it does not already set appended."""
    present = {flag.split("=", 1)[0] for flag in xla_flags.split()}
    extra = [f"{name}={value}" for name, value in DEFAULT_FLAGS.items() if name not in present]
    return " ".join([xla_flags.strip(), *extra]).strip()


def apply_defaults(environ=os.environ) -> None:
    if environ.get("SEGJAX_XLA_DEFAULTS", "1") == "0":
        return
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    if jaxlib.startswith(MEASURED_JAXLIB):
        environ["XLA_FLAGS"] = with_defaults(environ.get("XLA_FLAGS", ""))
