"""ONNX conversion of whole jitted programs (Mask R-CNN's proposals, NMS loop and heads) with
jax2onnx 0.13 under jax 0.10, which that release predates (pyproject.toml says why it is pinned).

Three gaps, closed here and nowhere else:

- jax2onnx's own ``jnp`` primitives break under ``jax.vmap`` (their batching rules use
  ``batching.not_mapped``, gone from jax 0.10), so a program is first traced to a jaxpr by jax
  itself, vmaps already batched, and jax2onnx converts that jaxpr's primitives (``traced_to_onnx``).
- jax 0.10's ``stack`` and ``tile`` primitives have no jax2onnx lowering: they reuse jax2onnx's
  lowerings of ``jnp.stack`` and ``jnp.tile``, whose parameters (``axis``; ``reps``, one per
  axis) mean the same.
- jax2onnx lowers ``reduce_window_max`` to a MaxPool over every axis (four spatial axes for an
  NHWC max pool), which onnxruntime refuses ("Unsupported pooling size"): a window that is 1 on
  the batch and channel axes of a rank-4 NHWC operand becomes a 2-D MaxPool between transposes.
- jax2onnx gives a transposed convolution (``conv_general_dilated`` with ``lhs_dilation``, as
  ``flax.linen.ConvTranspose`` traces) the ONNX ConvTranspose strides of its ``window_strides``
  (1) instead of its ``lhs_dilation``, so Mask R-CNN's 2x upsampling came out 15x15 for 28x28:
  the input dilation becomes the strides.

And it leaves constants that no node reads, which onnxruntime names in a warning each time it
loads the file: ``drop_unused_initializers`` removes them.
"""

import contextlib
import io
import logging

import jax
import numpy as np

_registered = False


def _register_lowerings() -> None:
    global _registered
    if _registered:
        return
    import onnx_ir as ir
    from jax2onnx.converter.ir_builder import _dtype_to_ir
    from jax2onnx.plugins._ir_shapes import _ensure_value_metadata, _stamp_type_and_shape
    from jax2onnx.plugins.jax.lax.conv import ConvGeneralDilatedPlugin
    from jax2onnx.plugins.jax.lax.reduce_window_max import ReduceWindowMaxPrimitivePlugin
    from jax2onnx.plugins.jax.numpy.stack import JnpStackPlugin
    from jax2onnx.plugins.jax.numpy.tile import JnpTilePlugin
    from jax2onnx.plugins.plugin_system import import_all_plugins, register_primitive

    import_all_plugins()  # first: the registrations below replace or add to its entries

    @register_primitive(jaxpr_primitive=jax.lax.stack_p.name)
    class LaxStack(JnpStackPlugin):
        @classmethod
        def binding_specs(cls):  # binds jax's primitive: nothing of jax.numpy to patch
            return []

    @register_primitive(jaxpr_primitive=jax.lax.tile_p.name)
    class LaxTile(JnpTilePlugin):
        @classmethod
        def binding_specs(cls):
            return []

    @register_primitive(jaxpr_primitive=jax.lax.reduce_window_max_p.name)
    class NHWCMaxPool(ReduceWindowMaxPrimitivePlugin):
        def lower(self, ctx, eqn):
            params = eqn.params
            window, strides = params["window_dimensions"], params["window_strides"]
            padding = params["padding"]
            operand, out = eqn.invars[0], eqn.outvars[0]
            plain = all(d == 1 for d in (*params["base_dilation"], *params["window_dilation"]))
            nhwc_window = (
                len(window) == 4
                and window[0] == window[3] == strides[0] == strides[3] == 1
                and tuple(padding[0]) == tuple(padding[3]) == (0, 0)
            )
            if not (plain and nhwc_window):
                return super().lower(ctx, eqn)
            dtype = _dtype_to_ir(np.dtype(operand.aval.dtype), ctx.builder.enable_double_precision)
            (n, h, w, c), (_, oh, ow, _) = operand.aval.shape, out.aval.shape

            def stamped(value, shape):
                value.type = ir.TensorType(dtype)
                _stamp_type_and_shape(value, shape)
                _ensure_value_metadata(ctx, value)
                return value

            x = ctx.get_value_for_var(operand, name_hint=ctx.fresh_name("maxpool_in"))
            nchw = ctx.builder.Transpose(
                x, perm=(0, 3, 1, 2), _outputs=[ctx.fresh_name("maxpool_nchw")]
            )
            pooled = ctx.builder.MaxPool(
                stamped(nchw, (n, c, h, w)),
                kernel_shape=tuple(window[1:3]),
                strides=tuple(strides[1:3]),
                pads=(padding[1][0], padding[2][0], padding[1][1], padding[2][1]),
                _outputs=[ctx.fresh_name("maxpool")],
            )
            spec = ctx.get_value_for_var(out, name_hint=ctx.fresh_name("maxpool_out"))
            result = ctx.builder.Transpose(
                stamped(pooled, (n, c, oh, ow)),
                perm=(0, 2, 3, 1),
                _outputs=[getattr(spec, "name", None) or ctx.fresh_name("maxpool_out")],
            )
            ctx.bind_value_for_var(out, stamped(result, (n, oh, ow, c)))

    @register_primitive(jaxpr_primitive=jax.lax.conv_general_dilated_p.name)
    class StridedTransposeConv(ConvGeneralDilatedPlugin):
        def lower(self, ctx, eqn):
            dilation = eqn.params.get("lhs_dilation") or ()
            if any(d > 1 for d in dilation) and all(s == 1 for s in eqn.params["window_strides"]):
                eqn = eqn.replace(params={**eqn.params, "window_strides": tuple(dilation)})
            return super().lower(ctx, eqn)

    _registered = True


def _subgraphs(graph):
    for node in graph.node:
        for attribute in node.attribute:
            yield from ([attribute.g] if attribute.HasField("g") else [])
            yield from attribute.graphs


def _used_names(graph) -> set[str]:
    """The names read by the nodes of ``graph`` and of every graph nested in it (a loop body
    may read its outer graph's values), and its outputs."""
    used = {name for node in graph.node for name in node.input}
    used |= {output.name for output in graph.output}
    for subgraph in _subgraphs(graph):
        used |= _used_names(subgraph)
    return used


def drop_unused_initializers(graph) -> int:
    """Removes the constants that no node reads, in ``graph`` and every graph nested in it
    (jax2onnx leaves some in its loop bodies, and onnxruntime warns about each one of them
    whenever it loads the file); returns how many."""
    dropped = sum(drop_unused_initializers(subgraph) for subgraph in _subgraphs(graph))
    used = _used_names(graph)
    keep = [init for init in graph.initializer if init.name in used]
    dropped += len(graph.initializer) - len(keep)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return dropped


def traced_to_onnx(fn, example: np.ndarray, input_name: str, output_names: list[str]):
    """The ONNX ModelProto of ``fn`` (one array in, a tuple of arrays out) at ``example``'s
    shape and dtype, every constant it closes over embedded. Shapes are those of the trace:
    nothing symbolic."""
    closed = jax.make_jaxpr(fn)(example)  # before jax2onnx patches jax.numpy

    def replay(x):
        return tuple(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, x))

    # jax2onnx 0.13 prints debug lines and logs tracebacks of plugins that do not import under
    # this jax (unused here); onnx_ir warns about untyped shape constants. Errors still raise.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        from jax2onnx import to_onnx

        _register_lowerings()
        spec = jax.ShapeDtypeStruct(example.shape, example.dtype)
        proto = to_onnx(
            replay,
            [spec],
            model_name="segjax",
            input_names=[input_name],
            output_names=output_names,
        )
    drop_unused_initializers(proto.graph)
    return proto
