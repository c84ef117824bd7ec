"""Mask R-CNN: target assignment on hand-made boxes, the two pyramids' structure, static shapes
(one compile per run), 8 devices against 1, and the commands on an instance run."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.detection import targets
from segjax.models import create_model
from segjax.models.detection import FeaturePyramid, NestedPyramid, RepeatedPyramid
from tests.cli_utils import losses, run

SMOKE = ["--config", "configs/maskrcnn_fpn.py:smoke"]


def test_match_labels_positive_negative_ignored_and_low_quality():
    gt = jnp.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]], jnp.float32)
    boxes = jnp.array(
        [
            [0, 0, 10, 10],  # IoU 1 with gt 0
            [0, 0, 10, 14],  # IoU 10/14 = 0.71
            [0, 0, 10, 20],  # IoU 0.5: between the thresholds
            [50, 50, 60, 60],  # IoU 0: negative
            [18, 18, 30, 30],  # IoU 100/144 = 0.69 with gt 1, its best box
        ],
        jnp.float32,
    )
    iou = jax.numpy.asarray(np.array([[float(v) for v in row] for row in _iou(boxes, gt)]))
    valid = jnp.array([True, True, False])
    matched, label = targets.match(iou, valid, 0.3, 0.7, allow_low_quality=False)
    assert list(np.asarray(label)) == [1, 1, -1, 0, -1]
    assert list(np.asarray(matched))[:2] == [0, 0]
    matched, label = targets.match(iou, valid, 0.3, 0.7, allow_low_quality=True)
    assert list(np.asarray(label)) == [1, 1, -1, 0, 1]  # gt 1's best box becomes positive
    assert int(matched[4]) == 1
    _, label = targets.match(iou, jnp.zeros(3, bool), 0.3, 0.7, allow_low_quality=True)
    assert list(np.asarray(label)) == [0] * 5  # no true box: all negative


def _iou(a, b):
    from segjax.detection.boxes import pairwise_iou

    return np.asarray(pairwise_iou(a, b))


def test_sampling_has_fixed_counts_and_fractions():
    label = jnp.array([1] * 10 + [0] * 100 + [-1] * 20)
    for seed in range(3):
        pos, neg = targets.sample(jax.random.key(seed), label, 32, 0.25)
        assert int(pos.sum()) == 8 and int(neg.sum()) == 24
        assert not np.any(np.asarray(pos) & (np.asarray(label) != 1))
        assert not np.any(np.asarray(neg) & (np.asarray(label) != 0))
        slots, slot_pos, slot_sampled = targets.sampled_slots(pos, neg, 32)
        assert np.all(slot_pos[:8]) and not np.any(slot_pos[8:]) and np.all(slot_sampled)
    # Few positives: the rest of the budget goes to negatives.
    few = jnp.array([1, 1] + [0] * 100)
    pos, neg = targets.sample(jax.random.key(0), few, 32, 0.25)
    assert int(pos.sum()) == 2 and int(neg.sum()) == 30
    # Too few of both: slots past the sampled ones are filler, marked unsampled.
    tiny = jnp.array([1, 0, 0, -1])
    pos, neg = targets.sample(jax.random.key(0), tiny, 8, 0.5)
    slots, slot_pos, slot_sampled = targets.sampled_slots(pos, neg, 8)
    assert slots.shape == slot_pos.shape == slot_sampled.shape == (8,)
    assert int(slot_sampled.sum()) == 3 and bool(slot_pos[0]) and not slot_sampled[4:].any()


def test_mask_targets_cut_the_object_out_of_its_box():
    instances = np.zeros((20, 20), np.int32)
    instances[4:12, 6:10] = 1  # object 1: rows 4-11, columns 6-9
    instances[4:12, 10:14] = 2  # its neighbour, inside the same box
    box = jnp.array([[6, 4, 14, 12]], jnp.float32)  # covers both, 8x8 pixels
    out = np.asarray(targets.mask_targets(jnp.asarray(instances), box, jnp.array([1]), 8))
    expected = np.zeros((8, 8))
    expected[:, :4] = 1  # the left half is object 1, the right half its neighbour
    np.testing.assert_array_equal(out[0], expected)
    bigger = np.asarray(targets.mask_targets(jnp.asarray(instances), box, jnp.array([2]), 28))
    # Bilinear sampling blends the box's border pixels with the outside: corners fall below 0.5.
    assert bigger[0, 1:-1, 15:-1].all() and not bigger[0, :, :13].any()


def test_pyramid_levels_and_nested_nodes():
    features = [
        jnp.zeros((1, 64 // s, 64 // s, c)) for s, c in ((4, 8), (8, 16), (16, 32), (32, 64))
    ]
    for module, nodes in (
        (FeaturePyramid(16), set()),
        (NestedPyramid(16), {"x_0_1", "x_0_2", "x_0_3", "x_1_1", "x_1_2", "x_2_1"}),
        (
            RepeatedPyramid(16, repeats=2),
            {f"{d}{r}_{i}" for r in (0, 1) for d, levels in (("down", (0, 1, 2)), ("up", (1, 2, 3)))
             for i in levels},
        ),
    ):  # fmt: skip
        variables = jax.eval_shape(lambda m=module: m.init(jax.random.key(0), features))
        names = set(variables["params"])
        assert {n for n in names if n.startswith(("x_", "down", "up"))} == nodes
        assert {f"lateral{i}" for i in range(4)} | {f"output{i}" for i in range(4)} <= names
        levels = jax.eval_shape(lambda v, m=module: m.apply(v, features), variables)
        assert [level.shape for level in levels] == [(1, s, s, 16) for s in (16, 8, 4, 2, 1)]


def test_nested_p2_sees_the_deepest_level():
    """P2 of the nested pyramid depends on C5 through x_0_3's nested nodes (FPN's through its
    top-down sum, the repeated FPN's through its top-down nodes): the gradient of P2 with
    respect to C5 is not zero."""
    features = [
        jax.random.normal(jax.random.key(i), (1, 32 // s, 32 // s, 4))
        for i, s in enumerate((4, 8, 16, 32))
    ]
    for module in (FeaturePyramid(8), NestedPyramid(8), RepeatedPyramid(8, repeats=1)):
        variables = jax.jit(module.init)(jax.random.key(0), features)  # faster than eager

        def p2(c5, module=module, variables=variables):
            return jnp.sum(module.apply(variables, [*features[:3], c5])[0] ** 2)

        assert float(jnp.abs(jax.jit(jax.grad(p2))(features[3])).sum()) > 0


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "efficientnet_lite0"])
@pytest.mark.parametrize("pyramid", ["fpn", "unetpp", "fpn_repeated"])
def test_lightweight_encoders_under_every_pyramid(encoder, pyramid):
    """Mask R-CNN's pyramids take the encoder's skips at strides 4..32, whatever their widths."""
    model = create_model(
        "maskrcnn", encoder, 2, pyramid=pyramid, pyramid_channels=16, max_detections=5
    )
    x = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    out = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert jax.tree.leaves(out)


def test_repeated_fpn_spends_the_nested_pyramids_compute():
    """At the instance configs' width (128) four repeats match the nested pyramid's encoder +
    pyramid multiply-adds within 10% on both encoders of the instance study, and the heads read
    the same width whatever the pyramid."""
    from segjax.models.counting import summarize

    for encoder in ("resnet18", "ghostnet_100"):
        macs, params = {}, {}
        for pyramid in ("unetpp", "fpn_repeated", "fpn"):
            model = create_model("maskrcnn", encoder, 2, pyramid=pyramid, pyramid_channels=128)
            layers = summarize(model, (1, 256, 256, 3)).layers
            trunk = [layer.path.split("/")[0] in ("encoder", "pyramid") for layer in layers]
            macs[pyramid] = sum(layer.macs for layer, t in zip(layers, trunk, strict=True) if t)
            params[pyramid] = {
                layer.path: layer.params for layer, t in zip(layers, trunk, strict=True) if not t
            }
        assert abs(macs["fpn_repeated"] / macs["unetpp"] - 1) < 0.10, (encoder, macs)
        assert macs["fpn"] < 0.5 * macs["unetpp"]
        assert params["fpn_repeated"] == params["unetpp"] == params["fpn"] != {}


def test_create_model_checks_detection_options():
    with pytest.raises(ValueError, match="pyramid='bifpn' is not valid"):
        create_model("maskrcnn", "resnet18", 2, pyramid="bifpn")
    with pytest.raises(ValueError, match="pyramid_repeats=0 is not valid"):
        create_model("maskrcnn", "resnet18", 2, pyramid="fpn_repeated", pyramid_repeats=0)
    with pytest.raises(ValueError, match="anchor_sizes=.*one size per level"):
        create_model("maskrcnn", "resnet18", 2, anchor_sizes=(8, 16))
    with pytest.raises(ValueError, match="num_classes=1 is not valid for arch 'maskrcnn'"):
        create_model("maskrcnn", "resnet18", 1)
    with pytest.raises(ValueError, match="deep_supervision"):
        create_model("maskrcnn", "resnet18", 2, deep_supervision=True)


@pytest.mark.instances
def test_train_compiles_once_and_eight_devices_match_one(tfds_dir, tmp_path):
    """A smoke run of Mask R-CNN on the synthetic shapes' instances: one compilation of the
    train step for the whole run (static shapes), the same loss on 8 simulated devices as on
    one for the same global batches, and evaluate / predict on the result.

    Steps 1 and 2 agree to float tolerance. Later steps drift apart by a few per cent: the
    reductions' order changes the parameters in the last digits, and the discrete choices of a
    step (top-k proposals, NMS, sampled RoIs) amplify that, so they are compared loosely."""
    common = [
        *SMOKE,
        f"--config.data.data_dir={tfds_dir}",
        "--config.batch_size=8",
        "--config.log_every_steps=1",
    ]
    one = run(
        ["python", "-m", "segjax.train", *common, "--workdir", str(tmp_path / "one")],
        env_extra={"JAX_LOG_COMPILES": "1"},
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stderr.count("Compiling jit(train_step)") == 1
    eight = run(
        ["python", "-m", "segjax.train", *common, "--workdir", str(tmp_path / "eight")], devices=8
    )
    assert eight.returncode == 0, eight.stderr[-3000:]
    for key in ("train/loss", "train/loss/mask", "train/loss/rpn_objectness", "train/grad_norm"):
        a, b = losses(tmp_path / "one", key), losses(tmp_path / "eight", key)
        assert sorted(a) == sorted(b) == list(range(1, 7)), key
        np.testing.assert_allclose([b[1], b[2]], [a[1], a[2]], rtol=1e-3, err_msg=key)
        np.testing.assert_allclose([b[k] for k in a], list(a.values()), rtol=0.2, err_msg=key)

    evaluated = run(
        ["python", "-m", "segjax.evaluate", "--workdir", str(tmp_path / "one"), "--num_images", "1"]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.load(open(tmp_path / "one" / "eval_test.json"))
    assert 0 <= report["dsb_score"] <= 1 and 0 <= report["mask_ap"] <= 1
    assert len(report["per_image"]) == report["examples"] == 23

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    from segjax.data.shapes import generate_example

    Image.fromarray(generate_example(0, "test", 0, 64)[0]).save(images / "a.png")
    out = tmp_path / "predicted"
    predicted = run(
        [
            "python", "-m", "segjax.predict", "--workdir", str(tmp_path / "one"),
            "--input", str(images), "--output", str(out), "--save", "overlay",
        ]
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    labels = np.asarray(Image.open(out / "a.png"))
    objects = json.load(open(out / "a.json"))["objects"]
    assert labels.shape == (64, 64) and sorted(np.unique(labels[labels > 0])) == [
        o["id"] for o in objects
    ]
    assert all(o["area"] == int((labels == o["id"]).sum()) for o in objects)
    assert os.path.exists(out / "a_overlay.png")

    # evaluate and predict turn the same run's detections into the same objects, --min_area 16
    # included (it drops objects smaller than that in both): the test split's images through
    # segjax.predict against the label maps segjax.evaluate scores.
    from segjax.instances import jit_instances, predict_instances
    from segjax.runs import restore_for_evaluation

    run_, state, _ = restore_for_evaluation(str(tmp_path / "one"), "best")
    source = run_.dataset.split("test")
    fn = jit_instances(run_)
    by_min_area = {
        area: {r.name: r.predicted for r in predict_instances(fn, state, run_, "test", None, area)}
        for area in (1, 16)
    }
    from segjax.data.augment import resize

    # The images as evaluate sees them: the smoke config scores at data.eval_size (32x32).
    eval_size = tuple(run_.config.data.eval_size)
    test_images = tmp_path / "test_images"
    test_images.mkdir()
    for i in range(len(source)):
        image = resize(source[i]["image"], source[i]["mask"], eval_size)[0]
        Image.fromarray(image).save(test_images / f"{source[i]['name']}.png")
    out16 = tmp_path / "predicted16"
    predicted = run(
        [
            "python", "-m", "segjax.predict", "--workdir", str(tmp_path / "one"),
            "--input", str(test_images), "--output", str(out16), "--min_area", "16",
            "--score_threshold", "0",
        ]
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    for name, expected in by_min_area[16].items():
        np.testing.assert_array_equal(np.asarray(Image.open(out16 / f"{name}.png")), expected)
    counts = {
        a: sum(len(np.unique(m)) - 1 for m in maps.values()) for a, maps in by_min_area.items()
    }
    assert counts[16] > 0 and counts[16] < counts[1]  # the flag mattered, and objects remain


def test_instance_config_errors_name_the_key(shapes_small, tmp_path, tfds_dir):
    from configs.maskrcnn_unetpp import get_config
    from segjax import validation
    from segjax.data import DataError, load_dataset
    from segjax.errors import ConfigError
    from tests.conftest import varied_items, write_folder

    config = get_config("smoke")
    config.data.max_instances = 0
    with pytest.raises(ConfigError, match=r"data.max_instances=0: model.arch='maskrcnn' needs"):
        validation.check_config(config)
    config = get_config("smoke")
    config.model.pyramid = "bifpn"
    with pytest.raises(ConfigError, match=r"model.pyramid='bifpn' is not valid"):
        validation.check_config(config)
    config = get_config("smoke")
    config.best_metric = "miou"
    with pytest.raises(ConfigError, match=r"best_metric='miou' is not a metric .*dsb_score"):
        validation.check_with_data(config, shapes_small, 3)
    root = write_folder(tmp_path / "plain", varied_items())
    config = get_config("smoke")
    config.data.name, config.data.path, config.data.data_dir = "folder", root, tfds_dir
    config.data.num_classes = 2
    dataset = load_dataset(config.data)
    with pytest.raises(DataError, match=r"trains on instance maps, and dataset .* has none"):
        validation.check_with_data(config, dataset, 3)


@pytest.mark.instances
def test_instance_experiment_report(tfds_dir, tmp_path):
    """An instance sweep of a Mask R-CNN and a U-Net split by watershed and components: the
    report has a row per method with the DSB score and mask AP its members' evaluations wrote."""
    spec = tmp_path / "sweep.py"
    spec.write_text(
        "from segjax.experiments.spec import Experiment, Member\n"
        f"B = {{'data.data_dir': {str(tfds_dir)!r}}}\n"
        "def get_experiment():\n"
        "    return Experiment(name='sweep', kind='instances', size=64, curves=True,\n"
        "        comparisons=(('mrcnn', 'unet_components'),), members=[\n"
        "        Member('mrcnn', 'configs/maskrcnn_unetpp.py:smoke', B),\n"
        "        Member('unet_watershed', 'configs/resnet_unet.py:smoke',\n"
        "               {**B, 'model.encoder': 'resnet18', 'model.encoder_depth': 3},\n"
        "               eval_flags=('--instances=watershed,components',)),\n"
        "    ])\n"
    )
    workdir = tmp_path / "runs"
    swept = run(["python", "-m", "segjax.experiments.run", str(spec), "--workdir", str(workdir)])
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    reported = run(
        ["python", "-m", "segjax.experiments.report", str(spec), "--workdir", str(workdir)]
    )
    assert reported.returncode == 0, reported.stderr[-3000:]
    table = (workdir / "results.md").read_text()
    rows = {
        line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")
    }
    assert {"mrcnn", "unet_watershed", "unet_components"} <= set(rows)
    evaluated = json.load(open(workdir / "unet_watershed" / "eval_test.json"))
    assert f"{evaluated['components/dsb_score']:.4f}" in rows["unet_components"]
    assert f"{evaluated['dsb_score']:.4f}" in rows["unet_watershed"]
    mrcnn = json.load(open(workdir / "mrcnn" / "eval_test.json"))
    assert f"{mrcnn['mask_ap']:.4f}" in rows["mrcnn"]
    # per_image.csv: the test images worst DSB score first, with their object counts.
    with open(workdir / "mrcnn" / "per_image.csv") as file:
        table = list(csv.DictReader(file))
    assert len(table) == len(mrcnn["per_image"])
    scores = [float(row["dsb_score"]) for row in table]
    assert scores == sorted(scores) and set(table[0]) >= {"size", "true_objects"}
    assert (workdir / "results.png").stat().st_size > 10_000
    # Convergence per trained member, each by its own selection metric; the paired test over
    # the test images' DSB scores, Mask R-CNN against the U-Net's components.
    convergence = (workdir / "convergence.md").read_text()
    assert "dsb_score / miou" in convergence and "| unet_watershed | 2 |" in convergence
    assert "| mrcnn | 2 |" in convergence and "unet_components |" not in convergence
    paired_table = (workdir / "paired.md").read_text()
    assert "Per-image DSB score" in paired_table
    images = len(mrcnn["per_image"])
    difference = np.mean([a["dsb_score"] for a in mrcnn["per_image"]]) - np.mean(
        [b["dsb_score"] for b in evaluated["components/per_image"]]
    )
    assert f"| mrcnn | unet_components | 1 / 1 | {images} |" in paired_table
    assert f"{difference:+.4f}" in paired_table

    # The baseline's splitting chosen on validation: every setting of the grid scored, and the
    # best watershed setting named with the flags that apply it.
    chosen = run(
        [
            "python", "experiments/instances/splitter_choice.py",
            "--workdirs", str(workdir / "unet_watershed"), "--seed_heights", "1,3",
            "--min_areas", "1,8", "--out", str(tmp_path / "choice.md"),
        ]
    )  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    grid = json.load(open(tmp_path / "choice.json"))
    assert [(r["method"], r["seed_height"], r["min_area"]) for r in grid] == [
        ("watershed", 1.0, 1), ("watershed", 1.0, 8), ("watershed", 3.0, 1),
        ("watershed", 3.0, 8), ("components", None, 1), ("components", None, 8),
    ]  # fmt: skip
    best = max(grid[:4], key=lambda r: r["dsb_score"])
    flags = f"--seed_height={best['seed_height']:g} --min_area={best['min_area']}"
    assert flags in (tmp_path / "choice.md").read_text()

    # Mask R-CNN's thresholds chosen on validation: every (NMS, score) pair scored, and the
    # score threshold applied by segjax.evaluate gives the table's DSB score at the config's NMS.
    thresholds = run(
        [
            "python", "experiments/nested_pyramid/threshold_choice.py",
            "--workdirs", str(workdir / "mrcnn"), "--nms", "0.3,0.5", "--scores", "0.2,0.6",
            "--out", str(tmp_path / "thresholds.md"),
        ]
    )  # fmt: skip
    assert thresholds.returncode == 0, thresholds.stderr[-3000:]
    found = json.load(open(tmp_path / "thresholds.json"))
    assert [(r["nms"], r["score_threshold"]) for r in found] == [
        (0.3, 0.2), (0.3, 0.6), (0.5, 0.2), (0.5, 0.6)
    ]  # fmt: skip
    assert "THRESHOLDS entry" in (tmp_path / "thresholds.md").read_text()
    rescored = run(
        [
            "python", "-m", "segjax.evaluate", "--workdir", str(workdir / "mrcnn"),
            "--split", "validation", "--score_threshold", "0.6", "--num_images", "0",
        ]
    )  # fmt: skip
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    validation = json.load(open(workdir / "mrcnn" / "eval_validation.json"))
    assert validation["score_threshold"] == 0.6
    assert validation["dsb_score"] == pytest.approx(found[3]["dsb_score"], abs=1e-9)
    assert (
        json.load(open(workdir / "mrcnn" / "config.json"))["model"]["detection_nms_threshold"]
        == 0.5
    )

    # predict splits a semantic run's foreground as evaluate does: a seed height above any
    # distance in the image leaves no seeds, so the watershed gives the connected components.
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    from segjax.data.shapes import generate_example

    Image.fromarray(generate_example(0, "test", 0, 64)[0]).save(images / "a.png")
    maps = {}
    for method, height in (("components", "2"), ("watershed", "1000"), ("watershed", "1")):
        out = tmp_path / f"{method}{height}"
        predicted = run(
            [
                "python", "-m", "segjax.predict", "--workdir", str(workdir / "unet_watershed"),
                "--input", str(images), "--output", str(out), "--instances", method,
                "--seed_height", height, "--min_area", "4",
            ]
        )  # fmt: skip
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        maps[method + height] = np.asarray(Image.open(out / "a.png"))
        ids = [o["id"] for o in json.load(open(out / "a.json"))["objects"]]
        assert sorted(np.unique(maps[method + height][maps[method + height] > 0])) == ids
    assert maps["components2"].max() > 0
    np.testing.assert_array_equal(maps["watershed1000"], maps["components2"])


@pytest.mark.instances
def test_an_exported_mask_rcnn_predicts_the_objects_its_run_predicts(tfds_dir, tmp_path):
    """A Mask R-CNN run exported to ONNX (NHWC) and StableHLO (NCHW) at 64x64: segjax.predict
    --model writes the label maps and object lists that --workdir writes, for an image of the
    export's size and a smaller one (padded, as the run pads it to a multiple of 32); a larger
    image is named and skipped; int8 and --instances are refused with the reason. onnxruntime
    loads the ONNX file without a warning."""
    from PIL import Image

    from segjax.data.shapes import generate_example

    workdir = tmp_path / "run"
    trained = run(
        [
            "python", "-m", "segjax.train", *SMOKE, f"--config.data.data_dir={tfds_dir}",
            "--config.total_steps=3", "--config.eval_every_steps=3", "--workdir", str(workdir),
        ]
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    images = tmp_path / "images"
    images.mkdir()
    for name, size in (("a", 64), ("b", 48), ("c", 96)):
        Image.fromarray(generate_example(0, "test", ord(name), size)[0]).save(
            images / f"{name}.png"
        )
    models = {"onnx": ("nhwc", tmp_path / "m.onnx"), "stablehlo": ("nchw", tmp_path / "m.shlo")}
    for fmt, (layout, path) in models.items():
        exported = run(
            [
                "python", "-m", "segjax.export", "--workdir", str(workdir), "--format", fmt,
                "--layout", layout, "--size", "64", "--output", str(path),
            ]
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr[-3000:]
        sidecar = json.load(open(f"{path}.json"))
        assert sidecar["output"]["names"] == ["boxes", "scores", "classes", "masks", "valid"]
        assert sidecar["input"]["shape"] == ([1, 64, 64, 3] if layout == "nhwc" else [1, 3, 64, 64])

    def predict(source, out, *extra):
        return run(
            [
                "python", "-m", "segjax.predict", *source, "--input", str(images),
                "--output", str(tmp_path / out), "--score_threshold", "0", *extra,
            ]
        )  # fmt: skip

    reference = predict(["--workdir", str(workdir)], "from_run")
    assert reference.returncode == 0, reference.stderr[-3000:]
    found = 0
    for fmt, (_, path) in models.items():
        result = predict(["--model", str(path)], fmt)
        assert result.returncode == 1 and "1 of 3 images were skipped" in result.stderr
        assert "Removing initializer" not in result.stderr  # onnxruntime: no unused constants
        assert f"c.png: 96x96 is larger than the 64x64 input of {path}" in result.stderr
        assert "--size 96x96" in result.stderr
        for name in ("a", "b"):
            got = np.asarray(Image.open(tmp_path / fmt / f"{name}.png"))
            want = np.asarray(Image.open(tmp_path / "from_run" / f"{name}.png"))
            np.testing.assert_array_equal(got, want, err_msg=f"{fmt} {name}")
            objects = json.load(open(tmp_path / fmt / f"{name}.json"))["objects"]
            expected = json.load(open(tmp_path / "from_run" / f"{name}.json"))["objects"]
            assert [(o["id"], o["class"], o["area"]) for o in objects] == [
                (o["id"], o["class"], o["area"]) for o in expected
            ]
            np.testing.assert_allclose(
                [o["score"] for o in objects], [o["score"] for o in expected], atol=1e-5
            )
            found += len(objects)
    assert found > 0  # the comparison saw objects
    refused = run(
        [
            "python", "-m", "segjax.export", "--workdir", str(workdir), "--format", "onnx",
            "--int8", "--output", str(tmp_path / "q.onnx"),
        ]
    )  # fmt: skip
    assert refused.returncode != 0 and "int8 quantises semantic models only" in refused.stderr
    refused = predict(["--model", str(models["onnx"][1])], "split", "--instances=watershed")
    assert refused.returncode != 0 and "is a Mask R-CNN (it finds objects)" in refused.stderr
