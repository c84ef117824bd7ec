"""The fused depthwise and 1x1 convolutions (segjax/models/conv_ops.py) against lax's, in value
and gradient, and the switch that picks between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segjax.models import conv_ops, create_model
from tests.model_utils import random_variables

NHWC = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, kernel, strides, padding, dilation=(1, 1), groups=1):
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)
    return lax.conv_general_dilated(
        x,
        kernel,
        strides,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=numbers,
        feature_group_count=groups,
    )


def assert_grads_close(got, expected, rtol):
    """Each leaf within ``rtol`` of its own largest entry, or of the largest gradient anywhere
    when the leaf is small: through train-mode BatchNorm, gradients that are nearly zero (e.g. a
    bias before another BatchNorm) are float32 rounding noise on both paths."""
    expected, got = jax.tree.leaves(expected), jax.tree.leaves(got)
    scale = max(float(jnp.abs(e).max()) for e in expected)
    for g, e in zip(got, expected, strict=True):
        error = float(jnp.abs(g - e).max())
        assert error <= rtol * max(float(jnp.abs(e).max()), 1e-2 * scale), error


def value_and_grads(conv, x, kernel, cotangent):
    out, vjp = jax.vjp(conv, x, kernel)
    return (out, *vjp(cotangent))


def assert_close(got, expected, rtol):
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        g, e = np.asarray(g, np.float32), np.asarray(e, np.float32)
        assert np.abs(g - e).max() <= rtol * np.abs(e).max(), np.abs(g - e).max()


# (input height, width, kernel, stride, dilation, channel multiplier): odd and even sizes,
# sizes smaller than the kernel's reach, and every stride and kernel the models use.
DEPTHWISE_CASES = [
    (9, 7, 3, 1, 1, 1),
    (9, 7, 3, 2, 1, 1),
    (8, 8, 5, 2, 1, 1),
    (5, 6, 5, 1, 1, 2),
    (3, 3, 5, 2, 1, 1),
    (7, 10, 3, 1, 2, 1),
    (11, 9, 3, 2, 2, 2),
]


@pytest.mark.parametrize("h,w,k,stride,dilation,multiplier", DEPTHWISE_CASES)
def test_depthwise_equals_lax_in_value_and_gradient(h, w, k, stride, dilation, multiplier):
    channels = 6
    keys = jax.random.split(jax.random.PRNGKey(h * 100 + w * 10 + k), 3)
    x = jax.random.normal(keys[0], (2, h, w, channels))
    kernel = jax.random.normal(keys[1], (k, k, 1, channels * multiplier))
    pad = (k // 2) * dilation
    args = ((stride, stride), ((pad, pad), (pad, pad)), (dilation, dilation))
    expected_out = lax_conv(x, kernel, *args, groups=channels)
    cotangent = jax.random.normal(keys[2], expected_out.shape)
    expected = value_and_grads(
        lambda a, b: lax_conv(a, b, *args, groups=channels), x, kernel, cotangent
    )
    got = value_and_grads(lambda a, b: conv_ops.depthwise_conv(a, b, *args), x, kernel, cotangent)
    assert_close(got, expected, 1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_equals_lax_in_value_and_gradient(stride):
    keys = jax.random.split(jax.random.PRNGKey(stride), 3)
    x = jax.random.normal(keys[0], (2, 7, 9, 5))
    kernel = jax.random.normal(keys[1], (1, 1, 5, 4))
    strides = (stride, stride)
    expected_out = lax_conv(x, kernel, strides, ((0, 0), (0, 0)))
    cotangent = jax.random.normal(keys[2], expected_out.shape)
    expected = value_and_grads(
        lambda a, b: lax_conv(a, b, strides, ((0, 0), (0, 0))), x, kernel, cotangent
    )
    got = value_and_grads(lambda a, b: conv_ops.pointwise_conv(a, b, strides), x, kernel, cotangent)
    assert_close(got, expected, 1e-5)


def test_bfloat16_depthwise_is_bfloat16_and_close_to_float32():
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(keys[0], (2, 9, 9, 8))
    kernel = jax.random.normal(keys[1], (3, 3, 1, 8))
    args = ((2, 2), ((1, 1), (1, 1)), (1, 1))
    exact = value_and_grads(
        lambda a, b: lax_conv(a, b, *args[:2], groups=8),
        x,
        kernel,
        jax.random.normal(keys[2], (2, 5, 5, 8)),
    )
    cotangent = jax.random.normal(keys[2], (2, 5, 5, 8)).astype(jnp.bfloat16)
    half = (x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    fused = value_and_grads(lambda a, b: conv_ops.depthwise_conv(a, b, *args), *half, cotangent)
    standard = value_and_grads(lambda a, b: lax_conv(a, b, *args[:2], groups=8), *half, cotangent)
    assert all(t.dtype == jnp.bfloat16 for t in fused)
    assert_close([t.astype(jnp.float32) for t in fused], exact, 2e-2)
    assert_close(fused, standard, 2e-2)


def convolutions_traced(impl, conv):
    """The number of conv_general_dilated ops and of all ops in ``conv``'s jaxpr under ``impl``
    (traced afresh: a function JAX has traced keeps the implementation it was traced with)."""
    with conv_ops.conv_implementation(impl):
        jaxpr = jax.make_jaxpr(lambda: conv())()
    names = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
    return names.count("conv_general_dilated"), len(names)


def layer_conv(kernel_size, groups, strides=1):
    from segjax.models.layers import conv

    layer = conv(8, kernel_size, strides, groups=groups)
    x = jnp.ones((1, 9, 9, 8))
    variables = jax.jit(layer.init)(jax.random.PRNGKey(0), x)  # compiled: faster than eager
    return lambda: layer.apply(variables, x)


@pytest.mark.parametrize("kernel_size,groups", [(3, 8), (5, 8), (1, 1)])
def test_forcing_either_path_changes_how_it_is_traced(kernel_size, groups):
    conv = layer_conv(kernel_size, groups, strides=2)
    assert convolutions_traced("lax", conv)[0] == 1
    assert convolutions_traced("fused", conv)[0] == 0
    with conv_ops.conv_implementation("lax"):
        expected = conv()
    with conv_ops.conv_implementation("fused"):
        np.testing.assert_allclose(conv(), expected, rtol=1e-5, atol=1e-5)


def test_dense_and_grouped_convolutions_stay_lax_on_every_path():
    assert convolutions_traced("fused", layer_conv(3, 1))[0] == 1
    assert convolutions_traced("fused", layer_conv(3, 2))[0] == 1


def test_auto_is_fused_on_cpu_only():
    assert jax.default_backend() == "cpu"
    with conv_ops.conv_implementation("auto"):
        assert conv_ops.resolved_implementation() == "fused"
    assert conv_ops.FUSED_BACKENDS == ("cpu",)


def test_unknown_implementation_is_named():
    with pytest.raises(ValueError, match="conv_impl='fast'.*'auto', 'lax', 'fused'"):
        create_model("unet", "ghostnet_050", conv_impl="fast")


def model_outputs_and_grads(arch, encoder, impl, x, variables=None, **options):
    model = create_model(arch, encoder, num_classes=3, conv_impl=impl, **options)
    if variables is None:  # NumPy-filled: compiling a U-Net++'s init takes 30 s
        variables = random_variables(model, x.shape, gain=1.0, bias_std=0.1)

    def loss(params):
        out = model.apply({**variables, "params": params}, x)
        out = out if isinstance(out, list) else [out]
        return sum(jnp.mean(jnp.sin(o)) for o in out), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    return out, grads, variables


def assert_same_model(arch, encoder, size=32, **options):
    """Outputs and parameter gradients in eval mode. (Train-mode BatchNorm over a deepest map of
    a pixel or two per image turns rounding differences into any difference at all; the block
    test above covers train mode where BatchNorm is well conditioned.)"""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 3))
    standard = model_outputs_and_grads(arch, encoder, "lax", x, **options)
    # The same variables: both paths hold the same parameters.
    fused = model_outputs_and_grads(arch, encoder, "fused", x, standard[2], **options)
    assert_close(fused[0], standard[0], 1e-5)
    assert_grads_close(fused[1], standard[1], 1e-4)


def assert_block_same_on_both_paths(block, x):
    """A block in train mode: its output and the gradients of its parameters and input equal
    on the lax and fused paths."""
    variables = jax.jit(block.init, static_argnames="train")(jax.random.PRNGKey(0), x, train=False)

    def outputs(impl):
        def loss(params, x):
            with conv_ops.conv_implementation(impl):
                out, _ = block.apply(
                    {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
                )
            return jnp.sum(jnp.sin(out)), out

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            variables["params"], x
        )

    (_, expected), expected_grads = outputs("lax")
    (_, got), got_grads = outputs("fused")
    assert_close([got], [expected], 1e-5)
    assert_grads_close(got_grads, expected_grads, 1e-4)


def test_ghost_bottleneck_is_the_same_on_both_paths():
    """A strided GhostNet block with squeeze-excite and a depthwise shortcut: every rewritten
    kind of convolution, compiled in seconds (whole models: the parity group below)."""
    from segjax.models.encoders.ghostnet import GhostBottleneck

    block = GhostBottleneck(mid_features=24, features=16, kernel_size=5, strides=2, se_ratio=0.25)
    assert_block_same_on_both_paths(block, jax.random.normal(jax.random.PRNGKey(1), (2, 11, 9, 8)))


def test_inverted_residual_is_the_same_on_both_paths():
    """MobileNetV2's / EfficientNet-Lite's block, strided 5x5 depthwise with TensorFlow's
    asymmetric 'same' padding."""
    from segjax.models.encoders.mbconv import InvertedResidual

    block = InvertedResidual(features=16, expansion=6, kernel_size=5, strides=2, tf_same=True)
    assert_block_same_on_both_paths(block, jax.random.normal(jax.random.PRNGKey(1), (2, 12, 10, 8)))


@pytest.mark.parity
@pytest.mark.parametrize(
    "arch,encoder,options",
    [
        ("unet", "ghostnet_100", {}),
        ("unet", "mobilenet_v2", {}),
        ("unetpp", "efficientnet_lite0", {"deep_supervision": True}),
        ("unetpp", "ghostnet_050", {"deep_supervision": True, "decoder_block": "ghost"}),
        ("unet", "resnet18", {}),
        ("unetpp_paper", None, {"filters": (8, 16, 32)}),
    ],
)
def test_every_model_is_the_same_on_both_paths(arch, encoder, options):
    assert_same_model(arch, encoder, **options)


@pytest.mark.parity
def test_a_checkpoint_from_before_conv_impl_evaluates_the_same(tfds_dir, tmp_path):
    """A GhostNet run trained on the lax path, its config.json as runs wrote it before
    ``model.conv_impl`` existed: restored on the default (fused on CPU) path it gives the metrics
    it gives on the lax path."""
    import json
    import shutil

    from segjax.evaluate import evaluate_run
    from tests.cli_utils import run, train_command

    before = tmp_path / "before"
    overrides = ["--config.model.encoder=ghostnet_050", "--config.total_steps=4"]
    result = run(train_command(tfds_dir, before, *overrides, "--config.model.conv_impl=lax"))
    assert result.returncode == 0, result.stderr[-3000:]
    lax_copy = tmp_path / "lax"
    shutil.copytree(before, lax_copy)
    config_file = before / "config.json"
    config = json.loads(config_file.read_text())
    del config["model"]["conv_impl"]
    config_file.write_text(json.dumps(config))

    old = evaluate_run(str(before), "validation", "latest", num_images=0)
    standard = evaluate_run(str(lax_copy), "validation", "latest", num_images=0)
    assert old["step"] == standard["step"] == 4
    for key, value in standard.items():
        if isinstance(value, float):
            assert abs(old[key] - value) <= 1e-5, key


EXPORTED_CONVS = """
import re
import onnx
from jax import export
from segjax.export import export_onnx, export_stablehlo
from tests.export_parity_matrix import restored_model

restored = restored_model("unet", "ghostnet_050")
graph = onnx.load_from_string(export_onnx(restored, (64, 64))).graph
groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
text = export.deserialize(bytearray(export_stablehlo(restored))).mlir_module()
grouped = re.findall(r"feature_group_count = ([2-9]|[1-9][0-9]+)", text)
print(sum(g > 1 for g in groups), len(grouped))
"""


@pytest.mark.parity
def test_exports_hold_grouped_convolutions_not_the_fused_forms():
    import importlib.util
    import sys

    from tests.cli_utils import run

    if importlib.util.find_spec("jax2onnx") is None:
        pytest.skip("the deploy extra is not installed: pip install -e '.[deploy]'")
    result = run([sys.executable, "-c", EXPORTED_CONVS])  # jax2onnx patches flax: own process
    assert result.returncode == 0, result.stderr[-3000:]
    onnx_grouped, stablehlo_grouped = map(int, result.stdout.split()[-2:])
    # GhostNet-0.5's encoder: a cheap depthwise conv in each of its 32 Ghost modules, plus the
    # strided and shortcut depthwise convs.
    assert onnx_grouped >= 32 and stablehlo_grouped >= 32


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fused_batch_norm_is_flax_batch_norm_with_faster_sums(dtype):
    """Training mode: output, the gradients of input, scale and bias, and the running
    statistics; evaluation mode: output. The same variables as Flax's BatchNorm."""
    import flax.linen as nn

    from segjax.models.batch_norm import FusedBatchNorm

    x = (jax.random.normal(jax.random.PRNGKey(0), (3, 7, 5, 6)) * 3 + 1).astype(dtype)
    options = {"momentum": 0.9, "epsilon": 1e-5, "dtype": dtype}
    flax_bn, fused_bn = nn.BatchNorm(**options), FusedBatchNorm(**options)
    variables = flax_bn.init(jax.random.PRNGKey(1), x, use_running_average=True)
    assert jax.tree.structure(variables) == jax.tree.structure(
        fused_bn.init(jax.random.PRNGKey(1), x, use_running_average=True)
    )
    params = {"scale": jnp.linspace(0.5, 2.0, 6), "bias": jnp.linspace(-1.0, 1.0, 6)}
    weights = jnp.sin(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)

    def train(bn):
        def loss(params, x):
            y, updates = bn.apply(
                {**variables, "params": params}, x, use_running_average=False,
                mutable=["batch_stats"],
            )  # fmt: skip
            assert y.dtype == dtype
            return jnp.sum(y.astype(jnp.float32) * weights), updates

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)

    (expected, expected_stats), expected_grads = train(flax_bn)
    (got, got_stats), got_grads = train(fused_bn)
    rtol = 1e-4 if dtype == jnp.float32 else 1e-2  # bfloat16: a last-bit rounding apart
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
    assert_grads_close(got_grads, expected_grads, rtol)
    assert_close(jax.tree.leaves(got_stats), jax.tree.leaves(expected_stats), 1e-5)
    evaluated = [bn.apply(variables, x, use_running_average=True) for bn in (flax_bn, fused_bn)]
    np.testing.assert_array_equal(*evaluated)


def test_models_take_the_fused_batch_norm_where_convolutions_are_fused():
    import flax.linen as nn

    from segjax.models.batch_norm import FusedBatchNorm
    from segjax.models.layers import batch_norm

    for impl, kind in (("fused", FusedBatchNorm), ("lax", nn.BatchNorm)):
        with conv_ops.conv_implementation(impl):
            assert type(batch_norm(train=True)) is kind


@pytest.mark.parametrize("skip_channels", [(), (3,), (2, 4)])
def test_upsampled_conv_is_the_conv_of_the_upsampled_concatenation(skip_channels):
    """The decoder's first convolution at the input's resolution (four folded 2x2 kernels):
    the value and the gradients of input, skips and kernel, odd sizes, 0-2 skips."""
    from segjax.models.upsampling_conv import upsample_nearest, upsampled_conv

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], (2, 3, 5, 6))
    skips = [
        jax.random.normal(jax.random.fold_in(keys[1], i), (2, 6, 10, c))
        for i, c in enumerate(skip_channels)
    ]
    kernel = jax.random.normal(keys[2], (3, 3, 6 + sum(skip_channels), 7))
    cotangent = jax.random.normal(keys[3], (2, 6, 10, 7))

    def standard(x, skips, kernel):
        return lax_conv(jnp.concatenate([upsample_nearest(x), *skips], -1), kernel, (1, 1),
                        ((1, 1), (1, 1)))  # fmt: skip

    def value_and_grad(conv):
        out, vjp = jax.vjp(conv, x, skips, kernel)
        return out, vjp(cotangent)

    expected, expected_grads = jax.jit(lambda: value_and_grad(standard))()
    got, got_grads = jax.jit(lambda: value_and_grad(upsampled_conv))()
    assert_close([got], [expected], 1e-5)
    assert_grads_close(got_grads, expected_grads, 1e-5)


def test_decoder_blocks_hold_the_same_variables_on_both_paths():
    """The fused decoder convolution (UpsamplingConv) initialises exactly as nn.Conv does."""
    x = jnp.zeros((1, 64, 64, 3))
    inits = [
        jax.jit(create_model("unet", "resnet18", num_classes=2, conv_impl=impl).init)(
            jax.random.PRNGKey(0), x
        )
        for impl in ("lax", "fused")
    ]
    assert jax.tree.structure(inits[0]) == jax.tree.structure(inits[1])
    for a, b in zip(jax.tree.leaves(inits[0]), jax.tree.leaves(inits[1]), strict=True):
        np.testing.assert_array_equal(a, b)
