"""Parameters and multiply-accumulates of a Flax model, from shapes alone (``jax.eval_shape``
and the layers' call arguments; nothing is computed): ``summarize``. The command line is
``segjax.models.summary``.
"""

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_COUNTED = (nn.Conv, nn.ConvTranspose, nn.Dense, nn.BatchNorm)


@dataclasses.dataclass(frozen=True)
class Layer:
    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class Summary:
    input_shape: tuple[int, ...]
    layers: list[Layer]
    params: int
    macs: int
    module_outputs: dict[str, tuple[int, ...]]  # output shape of every module, by path

    def table(self, depth: int | None = None) -> str:
        """A text table, one row per layer, or per module ``depth`` levels deep."""
        rows: dict[str, list] = {}
        for layer in self.layers:
            parts = layer.path.split("/")
            key = "/".join(parts[:depth]) if depth else layer.path
            kind = layer.kind if depth is None or len(parts) <= depth else "..."
            output = self.module_outputs.get(key, layer.output_shape)
            row = rows.setdefault(key, [key, kind, output, 0, 0])
            row[3], row[4] = row[3] + layer.params, row[4] + layer.macs
        header = ("layer", "type", "output", "params", "MACs")
        body = [
            (p, k, "x".join(map(str, s[1:])), f"{n:,}", format_macs(m))
            for p, k, s, n, m in rows.values()
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(5)]
        lines = [
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in [header, *body]
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)


def format_macs(macs: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            return f"{macs / scale:.2f} {unit}"
    return str(macs)


def summarize(model: nn.Module, input_shape: Sequence[int]) -> Summary:
    """Traces ``model.init`` on ``input_shape`` (batch first) without compiling or allocating."""
    layers: list[Layer] = []
    module_outputs: dict[str, tuple[int, ...]] = {}
    batch = input_shape[0]

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and hasattr(out, "shape"):
            module_outputs["/".join(module.path)] = tuple(out.shape)
        if context.method_name == "__call__" and isinstance(module, _COUNTED):
            params = module.variables.get("params", {})
            macs = 0
            if "kernel" in params:
                shape = args[0].shape if isinstance(module, nn.ConvTranspose) else out.shape
                macs = math.prod(shape[:-1]) * params["kernel"].size // batch
            layers.append(
                Layer(
                    "/".join(module.path),
                    type(module).__name__,
                    tuple(out.shape),
                    sum(p.size for p in jax.tree.leaves(params)),
                    macs,
                )
            )
        return out

    def init():
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), jnp.zeros(input_shape, jnp.float32))

    variables = jax.eval_shape(init)
    params = sum(p.size for p in jax.tree.leaves(variables["params"]))
    return Summary(
        tuple(input_shape), layers, params, sum(layer.macs for layer in layers), module_outputs
    )
