"""int8 helpers: calibration inputs preprocessed as predict feeds the model, and the refusal of
a quantised model whose ranges are not finite."""

import numpy as np
import pytest

from segjax.data.augment import normalize
from segjax.errors import UserError
from segjax.quantize import calibration_inputs


def test_calibration_inputs_are_normalised_crops_padded_like_predict():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, np.uint8) for shape in ((40, 50, 3), (20, 30, 3))]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    inputs = calibration_inputs(images, (32, 32), mean, std, count=5)
    assert [x.shape for x in inputs] == [(1, 32, 32, 3), (1, 32, 32, 3)]
    small = inputs[1][0]  # the 20x30 image, whole, zero-padded at the bottom and right
    np.testing.assert_allclose(small[:20, :30], normalize(images[1], mean, std), atol=1e-6)
    assert not small[20:].any() and not small[:, 30:].any()
    crop = inputs[0][0]  # a 32x32 window of the 40x50 image
    windows = [
        normalize(images[0][t : t + 32, l : l + 32], mean, std)
        for t in range(9)
        for l in range(19)  # noqa: E741
    ]
    assert any(np.allclose(crop, w, atol=1e-6) for w in windows)
    nchw = calibration_inputs(images, (32, 32), mean, std, layout="nchw", count=1)
    assert len(nchw) == 1 and nchw[0].shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(nchw[0][0].transpose(1, 2, 0), inputs[0][0])
    with pytest.raises(UserError, match="no images to calibrate on"):
        calibration_inputs([], (32, 32), mean, std)


def test_a_quantised_model_with_an_infinite_range_is_refused():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from segjax.quantize import check_scales

    def model(scale):
        graph = helper.make_graph(
            [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("q", TensorProto.UINT8, [1])],
            [
                helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
                helper.make_tensor("zero", TensorProto.UINT8, [], [0]),
            ],
        )
        return onnx.helper.make_model(graph)

    check_scales(model(0.02))
    with pytest.raises(UserError, match=r"int8: 1 tensors have no finite quantisation range: x"):
        check_scales(model(float("inf")))


def test_the_convolutions_next_to_the_input_and_outputs_stay_float32():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from segjax.quantize import boundary_convs

    def node(op, inputs, output, name):
        return helper.make_node(op, inputs, [output], name=name)

    # image -> Transpose -> stem -> Relu -> mid -> split into head_a (-> Add -> out) and
    # mid2 -> head_b (-> out2); 'w' is an initializer, not a path to the input.
    graph = helper.make_graph(
        [
            node("Transpose", ["image"], "t", "transpose"),
            node("Conv", ["t", "w"], "s", "stem"),
            node("Relu", ["s"], "r", "relu"),
            node("Conv", ["r", "w"], "m", "mid"),
            node("Conv", ["m", "w"], "a", "head_a"),
            node("Add", ["a", "r"], "out", "add"),
            node("Conv", ["m", "w"], "m2", "mid2"),
            node("Conv", ["m2", "w"], "out2", "head_b"),
        ],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("out2", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])],
    )
    # 'add' also reaches the stem through 'r' without a Conv: it counts as next to an output.
    assert boundary_convs(graph) == ["head_a", "head_b", "stem"]


def test_relu6_as_max_and_min_becomes_one_clip_with_the_same_values():
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from segjax.export import clips_from_max_min

    def scalar(name, value):
        return helper.make_tensor(name, TensorProto.FLOAT, [], [value])

    # relu6 twice (the constant first, then second), and a Max also read by an Add: kept.
    nodes = [
        helper.make_node("Max", ["zero", "x"], ["a"], name="max_a"),
        helper.make_node("Min", ["a", "six"], ["b"], name="min_b"),
        helper.make_node("Max", ["b", "zero"], ["c"], name="max_c"),
        helper.make_node("Min", ["six", "c"], ["d"], name="min_d"),
        helper.make_node("Max", ["d", "zero"], ["e"], name="max_e"),
        helper.make_node("Min", ["e", "six"], ["f"], name="min_f"),
        helper.make_node("Add", ["e", "f"], ["y"], name="add"),
    ]
    tensor = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = helper.make_graph(
        nodes, "g", tensor[:1], tensor[1:], [scalar("zero", 0.0), scalar("six", 6.0)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([-3.0, 0.5, 5.0, 9.0], np.float32)

    def run(proto):
        session = onnxruntime.InferenceSession(proto.SerializeToString())
        return session.run(None, {"x": x})[0]

    before = run(model)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert clips_from_max_min(rewritten.graph) == 2
    onnx.checker.check_model(rewritten)
    assert [n.op_type for n in rewritten.graph.node] == ["Clip", "Clip", "Max", "Min", "Add"]
    np.testing.assert_array_equal(run(rewritten), before)
    np.testing.assert_array_equal(before, 2 * np.clip(x, 0, 6))


def test_the_paper_unet_with_transposed_convolutions_quantises(tmp_path, monkeypatch):
    """jax2onnx flips a transposed convolution's kernel with a Slice, where onnxruntime's
    symbolic shape inference gave up ("Incomplete symbolic shape inference") and --int8 failed;
    nor may its failure dump files into the working directory."""
    pytest.importorskip("jax2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")

    from segjax.defaults import base_config
    from segjax.export import export_onnx
    from segjax.inference import Restored
    from segjax.quantize import quantize_int8
    from segjax.validation import build_model
    from tests.model_utils import random_variables

    config = base_config()
    config.model.arch, config.model.encoder = "unet_paper", ""
    config.model.filters, config.model.norm, config.model.dropout = (4, 8), "batch", 0.0
    model = build_model(config, 2, 3)
    variables = random_variables(model, (1, 16, 16, 3), 0, gain=1.0, bias_std=0.1, train=False)
    restored = Restored(model, variables, config, ("background", "foreground"), 3, 2, 0)
    fp32 = export_onnx(restored, (16, 16))
    assert b"ConvTranspose" in fp32
    monkeypatch.chdir(tmp_path)
    inputs = [
        np.random.default_rng(i).normal(size=(1, 16, 16, 3)).astype(np.float32) for i in range(4)
    ]
    int8 = quantize_int8(fp32, inputs)
    session = onnxruntime.InferenceSession(int8, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: inputs[0]})[0]
    assert logits.shape == (1, 16, 16, 2) and np.isfinite(logits).all()
    assert b"QuantizeLinear" in int8
    assert list(tmp_path.iterdir()) == []


def conv_chain():
    """x -> conv a -> relu -> conv b -> relu -> conv c -> y, 1 channel, 3x3 kernels of ones / 9:
    only 'b' is neither next to the input nor to the output."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes, previous = [], "x"
    for name in ("a", "b", "c"):
        nodes.append(
            helper.make_node("Conv", [previous, "w"], [f"{name}_out"], name=name, pads=[1] * 4)
        )
        if name != "c":
            nodes.append(
                helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"relu_{name}")
            )
            previous = f"{name}_relu"
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "chain",
        [tensor("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [tensor("c_out", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [1 / 9] * 9)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx, model.SerializeToString()


def test_keep_float_leaves_the_named_convolution_unquantised_and_percentile_clips_outliers():
    pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    from segjax.quantize import prepared_graph, quantize_int8

    onnx, model = conv_chain()
    assert [n.name for n in prepared_graph(model).graph.node if n.op_type == "Conv"] == [
        "a",
        "b",
        "c",
    ]
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 1, (1, 1, 8, 8)).astype(np.float32) for _ in range(40)]
    inputs[0][0, 0, 4, 4] = 900.0  # b sees 100 at 9 of its 2560 values (0.35%), otherwise <= 1

    def input_scale(blob):
        """The scale b's input is quantised with (None: b runs in float32)."""
        graph = onnx.load_from_string(blob).graph
        initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "QuantizeLinear" and node.input[0] == "a_relu":
                return float(initializers[node.input[1]])
        return None

    minmax = input_scale(quantize_int8(model, inputs))
    assert minmax == pytest.approx(100 / 255, rel=0.01)
    assert input_scale(quantize_int8(model, inputs, keep_float=["b"])) is None
    percentile = input_scale(quantize_int8(model, inputs, percentile=99.0))
    assert percentile < minmax / 20


def test_agreement_is_a_per_class_iou_that_a_collapse_to_background_fails():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from segjax.quantize import agreement

    def model(*nodes):
        tensor = helper.make_tensor_value_info
        graph = helper.make_graph(
            list(nodes),
            "g",
            [tensor("x", TensorProto.FLOAT, [1, 4, 4, 2])],
            [tensor("y", TensorProto.FLOAT, [1, 4, 4, 2])],
            [helper.make_tensor("bias", TensorProto.FLOAT, [2], [100.0, 0.0])],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    same = model(helper.make_node("Identity", ["x"], ["y"])).SerializeToString()
    # every pixel background: x + (100, 0) for inputs well below 100
    background = model(helper.make_node("Add", ["x", "bias"], ["y"])).SerializeToString()
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[..., 1] = 1.0
    x[0, :, :3, 1] = -1.0  # 12 background pixels, 4 foreground
    assert agreement(same, same, [x]) == 1.0
    # background: IoU 12/16; foreground: 0 -> 0.375, where 75% of the pixels agree
    assert agreement(same, background, [x]) == pytest.approx(0.375)
