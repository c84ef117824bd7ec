"""Segmentation models: forward passes, any input size, deep supervision, pruning, options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.models import ARCHS, ENCODERS, create_model
from segjax.models.counting import summarize
from tests.model_utils import num_params, output_shapes, random_variables, variable_shapes

ODD = (2, 67, 71)  # not a multiple of 32: padded to 96x96 inside, cropped back
# efficientnet_lite0_smp is efficientnet_lite0 with PyTorch's padding: the same shapes and
# parameters (tests/test_encoders.py checks both), so the model-level tests take one of them.
MODEL_ENCODERS = sorted(set(ENCODERS) - {"efficientnet_lite0_smp"})


# Real compute for two encoders in the default run; the other encoders' compilations (10-30 s
# each) in the slow group that .ci/run runs.
QUICK_ENCODERS = ("resnet18", "mobilenet_v2")


@pytest.mark.parametrize(
    "encoder",
    [e if e in QUICK_ENCODERS else pytest.param(e, marks=pytest.mark.slow) for e in MODEL_ENCODERS],
)
def test_forward_train_and_eval_at_odd_size(encoder):
    """Real compute at 67x71 with 4 input channels and 7 classes: train mode updates the BN
    statistics, eval mode in bfloat16 gives finite float32 logits of the input's size."""
    x = jax.random.normal(jax.random.key(1), (*ODD, 4))
    model = create_model("unet", encoder, num_classes=7, in_channels=4)
    variables = random_variables(model, x.shape)
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    logits, updates = train(variables, x)
    assert logits.shape == (*ODD, 7) and logits.dtype == jnp.float32
    assert bool(jnp.isfinite(logits).all())
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"], variables["batch_stats"]
    )
    assert all(jax.tree.leaves(changed)), "every BatchNorm should update its running statistics"

    bf16 = create_model("unet", encoder, num_classes=7, in_channels=4, dtype="bfloat16")
    logits = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, x)
    assert logits.shape == (*ODD, 7) and logits.dtype == jnp.float32
    assert bool(jnp.isfinite(logits).all())


@pytest.mark.parametrize("encoder", MODEL_ENCODERS)
@pytest.mark.parametrize("in_channels,num_classes", [(1, 1), (3, 7), (4, 1), (1, 7)])
def test_output_shape_for_classes_and_channels(encoder, in_channels, num_classes):
    for arch in ("unet", "unetpp"):
        model = create_model(arch, encoder, num_classes=num_classes, in_channels=in_channels)
        assert output_shapes(model, (*ODD, in_channels)).shape == (*ODD, num_classes)


@pytest.mark.parametrize("encoder", MODEL_ENCODERS)
@pytest.mark.parametrize("depth", [3, 4, 5])
def test_encoder_depths(encoder, depth):
    for arch in ("unet", "unetpp"):
        model = create_model(arch, encoder, num_classes=2, encoder_depth=depth)
        assert output_shapes(model, (1, 37, 50, 3)).shape == (1, 37, 50, 2)


@pytest.mark.slow
def test_eval_mode_uses_running_statistics():
    """In eval mode an example's logits do not depend on the rest of its batch."""
    model = create_model("unet", "ghostnet_050", num_classes=3)
    x = jax.random.normal(jax.random.key(2), (3, 32, 32, 3))
    variables = random_variables(model, x.shape)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    together, alone = apply(variables, x)[:1], apply(variables, x[:1])
    # Only float reassociation differs; random weights give large activations: compare relatively.
    scale = float(jnp.abs(together).max())
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5 * scale)


def test_real_init_keeps_float32_params_with_bfloat16_compute():
    model = create_model("unet", "resnet18", num_classes=2, dtype="bfloat16")
    variables = variable_shapes(model, (1, 64, 64, 3))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype("float32")}


@pytest.mark.slow
def test_paper_models_forward_with_dropout():
    """The paper models have dropout: train mode needs a 'dropout' rng and is stochastic, eval
    mode is deterministic."""
    for arch in ("unet_paper", "unetpp_paper"):
        model = create_model(arch, num_classes=2, in_channels=1, filters=(4, 8, 16, 32, 64))
        x = jax.random.normal(jax.random.key(3), (1, 30, 33, 1))
        if arch == "unetpp_paper":  # the real initialisers, compiled once (about 10 s)
            variables = jax.jit(model.init)(jax.random.key(0), x)
        else:
            variables = random_variables(model, x.shape)
        train = jax.jit(lambda v, x, k, m=model: m.apply(v, x, train=True, rngs={"dropout": k}))
        a, b = train(variables, x, jax.random.key(1)), train(variables, x, jax.random.key(2))
        assert a.shape == (1, 30, 33, 2) and bool(jnp.any(a != b))
        evaluate = jax.jit(lambda v, x, m=model: m.apply(v, x))
        np.testing.assert_array_equal(evaluate(variables, x), evaluate(variables, x))


def test_paper_models_with_batch_norm():
    model = create_model("unetpp_paper", in_channels=1, norm="batch")
    variables = variable_shapes(model, (1, 32, 32, 1))
    assert "batch_stats" in variables
    plain = variable_shapes(create_model("unetpp_paper", in_channels=1), (1, 32, 32, 1))
    assert "batch_stats" not in plain


@pytest.mark.parametrize("arch,encoder", [("unetpp", "resnet34"), ("unetpp_paper", None)])
@pytest.mark.parametrize("prune_level", [1, 2, 3, 4])
def test_deep_supervision_returns_one_full_size_output_per_head(arch, encoder, prune_level):
    model = create_model(
        arch, encoder, num_classes=3, deep_supervision=True, prune_level=prune_level
    )
    outputs = output_shapes(model, (2, 45, 61, 3))
    assert [o.shape for o in outputs] == [(2, 45, 61, 3)] * prune_level


@pytest.mark.parametrize(
    "arch,encoder", [("unetpp", "resnet34"), ("unetpp", "ghostnet_100"), ("unetpp_paper", None)]
)
def test_pruning_strictly_reduces_params_and_macs(arch, encoder):
    sizes = [
        summarize(create_model(arch, encoder, prune_level=k), (1, 256, 256, 3))
        for k in (4, 3, 2, 1)
    ]
    params, macs = [s.params for s in sizes], [s.macs for s in sizes]
    assert params == sorted(params, reverse=True) and len(set(params)) == 4
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == 4


@pytest.mark.parametrize(
    "arch,encoder,options",
    [
        ("unetpp", "resnet18", {}),
        ("unetpp_paper", None, {"filters": (4, 8, 16, 32, 64)}),
    ],
)
def test_pruned_model_is_head_k_of_the_deep_supervised_model(arch, encoder, options):
    """UNet++ L_k at inference: the pruned model, given the deep-supervised model's parameters,
    computes exactly that model's k-th output."""
    x = jax.random.normal(jax.random.key(4), (1, 40, 40, 3))
    full = create_model(arch, encoder, num_classes=2, deep_supervision=True, **options)
    variables = random_variables(full, x.shape)
    full_outputs = jax.jit(lambda v, x: full.apply(v, x))(variables, x)
    for k in (1, 2):
        pruned = create_model(arch, encoder, num_classes=2, prune_level=k, **options)
        shapes = variable_shapes(pruned, x.shape)
        subset = jax.tree.map(lambda _, leaf: leaf, shapes, _subtree(variables, shapes))
        out = jax.jit(lambda v, x, m=pruned: m.apply(v, x))(subset, x)
        np.testing.assert_allclose(out, full_outputs[k - 1], rtol=1e-5, atol=1e-5)


def _subtree(tree, like):
    """The part of ``tree`` with the keys of ``like`` (fails if a key is missing)."""
    if not isinstance(like, dict):
        assert tree.shape == like.shape
        return tree
    return {key: _subtree(tree[key], value) for key, value in like.items()}


@pytest.mark.parametrize(
    "encoder,arch,options,outputs",
    [
        ("mobilenet_v2", "unetpp", {"deep_supervision": True, "prune_level": 2}, 2),
        ("efficientnet_lite0", "unetpp", {"deep_supervision": True}, 4),
        ("mobilenet_v2", "unet", {"decoder_block": "ghost", "attention": "scse"}, 1),
        ("efficientnet_lite0", "unetpp", {"decoder_block": "ghost", "prune_level": 3}, 1),
        ("efficientnet_lite0", "unet", {"freeze_encoder_bn": True, "dtype": "bfloat16"}, 1),
    ],
)
def test_lightweight_encoders_take_every_option(encoder, arch, options, outputs):
    model = create_model(arch, encoder, num_classes=2, in_channels=1, **options)
    shapes = output_shapes(model, (1, 45, 61, 1))
    shapes = shapes if isinstance(shapes, list) else [shapes]
    assert [s.shape for s in shapes] == [(1, 45, 61, 2)] * outputs


@pytest.mark.parametrize("arch", ["unet", "unetpp"])
@pytest.mark.parametrize("encoder", ["resnet34", "ghostnet_100"])
def test_ghost_decoder_is_at_least_40_percent_lighter(arch, encoder):
    def decoder_cost(decoder_block):
        model = create_model(arch, encoder, decoder_block=decoder_block)
        s = summarize(model, (1, 256, 256, 3))
        layers = [layer for layer in s.layers if layer.path.startswith("decoder/")]
        return sum(layer.params for layer in layers), sum(layer.macs for layer in layers)

    (conv_params, conv_macs), (ghost_params, ghost_macs) = (
        decoder_cost("conv"),
        decoder_cost("ghost"),
    )
    assert ghost_params <= 0.6 * conv_params
    assert ghost_macs <= 0.6 * conv_macs


def test_scse_attention_adds_parameters_and_keeps_shapes():
    plain = create_model("unet", "resnet18", num_classes=2)
    scse = create_model("unet", "resnet18", num_classes=2, attention="scse")
    assert num_params(variable_shapes(scse, (1, 64, 64, 3))) > num_params(
        variable_shapes(plain, (1, 64, 64, 3))
    )
    assert output_shapes(scse, (1, 67, 71, 3)).shape == (1, 67, 71, 2)


def test_default_decoder_channels_follow_depth():
    variables = variable_shapes(create_model("unet", "resnet18", encoder_depth=3), (1, 64, 64, 3))
    decoder = variables["params"]["decoder"]
    assert [decoder[f"block{i}"]["unit"]["conv2"]["kernel"].shape[-1] for i in range(3)] == [
        64,
        32,
        16,
    ]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: create_model("segformer", "resnet18"), "arch='segformer'"),
        (lambda: create_model("unet", "resnet152"), "encoder='resnet152'"),
        (lambda: create_model("unet", None), "choose one of ['resnet18'"),
        (lambda: create_model("unet_paper", "resnet18"), "has its own plain encoder"),
        (lambda: create_model("unet", "resnet18", deep_supervision=True), "unknown option"),
        (lambda: create_model("unet", "resnet18", encoder_depth=6), "encoder_depth=6"),
        (lambda: create_model("unet", "resnet18", decoder_channels=(64, 32)), "decoder_channels="),
        (lambda: create_model("unet", "resnet18", attention="cbam"), "attention='cbam'"),
        (lambda: create_model("unet", "resnet18", decoder_block="mlp"), "decoder_block='mlp'"),
        (lambda: create_model("unet", "resnet18", dtype="int8"), "dtype='int8'"),
        (lambda: create_model("unet", "resnet18", num_classes=0), "num_classes=0"),
        (lambda: create_model("unet", "resnet18", in_channels=2.5), "in_channels=2.5"),
        (lambda: create_model("unetpp", "resnet18", prune_level=5), "prune_level=5"),
        (lambda: create_model("unetpp_paper", dropout=1.0), "dropout=1.0"),
        (lambda: create_model("unet_paper", norm="layer"), "norm='layer'"),
    ],
)
def test_bad_options_name_the_option_and_valid_values(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        call()


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        create_model("segformer")
    assert all(arch in str(error.value) for arch in ARCHS)


def test_wrong_number_of_input_channels_is_a_clear_error():
    model = create_model("unet", "resnet18", in_channels=4)
    with pytest.raises(ValueError, match=r"in_channels=4\), got \(1, 64, 64, 3\)"):
        variable_shapes(model, (1, 64, 64, 3))
