"""segjax.predict: tiles blended without seams, masks that score as segjax.evaluate scores, and
unreadable inputs named and skipped."""

import dataclasses
import hashlib
import importlib.util
import json
import sys

import numpy as np
import pytest
from PIL import Image

from segjax.tiling import predict_tiled, tile_starts, tiles
from tests.cli_utils import assert_one_error_line, file_hashes, run, train_command


def test_tile_starts_cover_the_axis_and_end_flush():
    assert tile_starts(100, 128, 32) == [0]
    assert tile_starts(300, 128, 32) == [0, 96, 172]
    for length in (129, 200, 513, 1000):
        starts = tile_starts(length, 128, 16)
        assert starts[0] == 0 and starts[-1] == length - 128
        assert all(b - a <= 128 - 16 for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError, match="overlap=128 must be in"):
        tile_starts(300, 128, 128)


def test_blend_of_a_pointwise_model_is_its_whole_image_output():
    """Every pixel's weights are positive and normalised: a model that sees one pixel at a time
    gives exactly its whole-image output, whatever the tiling."""
    image = np.random.default_rng(0).random((301, 457, 3)).astype(np.float32)

    def pointwise(x):
        return np.concatenate([x, np.sin(x)], axis=-1)

    for tile, overlap, batch in ((128, 32, 3), (100, 0, 1), (512, 64, 2)):
        out = predict_tiled(pointwise, image, tile, overlap, batch)
        assert np.abs(out - pointwise(image[None])[0]).max() < 1e-6
    coverage = np.zeros(image.shape[:2])
    for top, left, window in tiles(301, 457, 128, 32):
        coverage[top : top + window.shape[0], left : left + window.shape[1]] += window
    assert coverage.min() > 0.99  # no pixel left to a tile's faded edge alone


def test_automatic_tile_is_the_largest_that_fits_the_budget():
    from segjax.memory_budget import automatic_tile

    assert automatic_tile(100.0, 512, 512, 10**12, 32) == 0  # the whole image fits
    fits_300 = int(1.5 * 100 * 300 * 300)  # MARGIN x bytes per pixel x 300 x 300
    assert automatic_tile(100.0, 1024, 1024, fits_300, 32) == 288  # a multiple of 32
    with pytest.raises(ValueError, match="even tiles of 128 pixels need 0.00 GiB"):
        automatic_tile(100.0, 1024, 1024, 1000, 32)


@pytest.fixture(scope="module")
def trained(tfds_dir, shapes_small, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("predict") / "run"
    # Evaluated at full resolution (the smoke variant evaluates at 32x32, which predict follows).
    result = run(
        train_command(tfds_dir, workdir, "--config.total_steps=12", "--config.data.eval_size=()")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_restore_for_predicting_needs_only_the_dataset_record(trained, shapes_small, monkeypatch):
    import segjax.runs
    from segjax.errors import WorkdirError
    from segjax.inference import restore
    from segjax.workdir import read_dataset_record

    record = json.loads((trained / "dataset.json").read_text())
    assert record == {
        "name": shapes_small.name,
        "class_names": list(shapes_small.class_names),
        "in_channels": shapes_small.split("train")[0]["image"].shape[-1],
    }

    def no_data(_):
        raise AssertionError("the data was read")

    monkeypatch.setattr(segjax.runs, "load_dataset", no_data)
    restored = restore(str(trained), "latest")
    assert restored.class_names == tuple(shapes_small.class_names) and restored.step == 12
    with pytest.raises(AssertionError, match="the data was read"):  # evaluation still reads it
        segjax.runs.restore_for_evaluation(str(trained), "latest")

    broken = trained.parent / "broken"
    broken.mkdir()
    (broken / "dataset.json").write_text('{"name": "x"}')
    with pytest.raises(WorkdirError, match=r"broken/dataset.json: expected name, class_names"):
        read_dataset_record(str(broken))


@pytest.mark.slow
def test_masks_score_as_evaluate_scores(trained, shapes_small, tmp_path):
    """The test split's images through ``segjax.predict``, its masks through ``segjax.score``:
    the mean IoU ``segjax.evaluate`` reports."""
    evaluated = run([sys.executable, "-m", "segjax.evaluate", "--workdir", str(trained),
                     "--split", "test", "--num_images", "0"])  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((trained / "eval_test.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    source = shapes_small.split("test")
    for index in range(len(source)):
        example = source[index]
        Image.fromarray(example["image"]).save(images / f"{example['name']}.png")
    predicted = run([sys.executable, "-m", "segjax.predict", "--workdir", str(trained),
                     "--input", str(images), "--output", str(tmp_path / "masks")])  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    scored = run([sys.executable, "-m", "segjax.score", "--workdir", str(trained), "--split",
                  "test", "--predictions", str(tmp_path / "masks"), "--json",
                  str(tmp_path / "score.json")])  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "mean" in scored.stdout and "whole split" in scored.stdout
    results = json.loads((tmp_path / "score.json").read_text())
    assert results["examples"] == report["examples"] == len(source)
    for key in ("miou", "image_miou", "dice", "pixel_accuracy"):
        assert abs(results[key] - report[key]) <= 1e-6, key

    (tmp_path / "masks" / f"{source[0]['name']}.png").unlink()
    missing = run([sys.executable, "-m", "segjax.score", "--workdir", str(trained),
                   "--predictions", str(tmp_path / "masks")])  # fmt: skip
    assert_one_error_line(missing, 2, f"1 of the {len(source)} test examples have no <name>.png")


@pytest.mark.slow
def test_tiles_blend_without_seams(trained, shapes_small):
    from segjax.inference import load_predictor, predict_probabilities

    predictor = load_predictor(str(trained), "latest")
    # A large image made of the test images, so that the model sees what it was trained on.
    source = shapes_small.split("test")
    rows = [
        np.concatenate([source[r * 4 + c]["image"] for c in range(4)], axis=1) for r in range(3)
    ]
    image = np.concatenate(rows, axis=0)  # 192 x 256
    whole = predict_probabilities(predictor, image)
    tiled = predict_probabilities(predictor, image, tile=128, overlap=48, batch=4)
    # Tiles see less context than the whole image, so a few uncertain pixels change class ...
    assert (whole.argmax(-1) == tiled.argmax(-1)).mean() > 0.9
    # ... but nowhere abruptly: across every tile edge (tiles at rows 0, 64 and columns 0, 80,
    # 128) the tiled probabilities change no more than the whole-image ones do there.
    for axis, edges in ((0, (64, 128)), (1, (80, 128, 208))):
        for edge in edges:

            def jump(probs, edge=edge, axis=axis):
                after = np.take(probs, edge, axis=axis)
                before = np.take(probs, edge - 1, axis=axis)
                return np.abs(after - before).sum(-1).mean()

            assert jump(tiled) <= 1.5 * jump(whole) + 0.02, (axis, edge)


@pytest.mark.slow
def test_command_writes_masks_and_names_the_unreadable_file(trained, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(inputs / "a.png")
    Image.fromarray(rng.integers(0, 255, (150, 130), dtype=np.uint8)).save(inputs / "b.jpg")
    (inputs / "c.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = run(
        [
            sys.executable,
            "-m",
            "segjax.predict",
            "--workdir",
            str(trained),
            "--input",
            str(inputs),
            "--output",
            str(out),
            "--tile",
            "64",
            "--overlap",
            "16",
            "--save",
            "probs,overlay",
            "--tta",
            "flips",
        ]
    )
    assert_one_error_line(result, 1, "1 of 3 images could not be read", str(inputs / "c.png"))
    assert "predicted 2 of 3 images" in result.stdout and "ETA" in result.stdout
    a = np.asarray(Image.open(out / "a.png"))
    assert a.shape == (70, 90) and a.dtype == np.uint8 and a.max() < 4  # 4 classes
    assert np.asarray(Image.open(out / "b.png")).shape == (150, 130)
    probs = np.load(out / "b_probs.npy")
    assert probs.shape == (150, 130, 4) and probs.dtype == np.float16
    assert np.allclose(probs.astype(np.float32).sum(-1), 1.0, atol=1e-2)
    assert np.asarray(Image.open(out / "a_overlay.png")).shape == (70, 90, 3)
    assert not (out / "c.png").exists()


def predict_command(workdir, inputs, output, *extra):
    return [sys.executable, "-m", "segjax.predict", "--workdir", str(workdir), "--input",
            str(inputs), "--output", str(output), *extra]  # fmt: skip


@pytest.mark.slow
def test_predict_never_overwrites_the_users_images(trained, tmp_path):
    """Issue 52, 5, 6, 12: an output folder holding the inputs, two inputs whose outputs share a
    name once predict's suffixes are added, an output that cannot be created: each refused
    before any work, one error line, every input byte for byte as it was."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "a_overlay.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(inputs / name)
    before = file_hashes(inputs)
    same = run(predict_command(trained, inputs, inputs))
    assert_one_error_line(same, 2, f"--output={inputs}: writing a.png would overwrite the input")
    clash = run(predict_command(trained, inputs, tmp_path / "out", "--save", "overlay"))
    assert_one_error_line(clash, 2, "a.png and", "a_overlay.png would both write a_overlay.png")
    assert not (tmp_path / "out").exists()
    unwritable = run(predict_command(trained, inputs / "b.jpg", "/proc/segjax_masks"))
    assert_one_error_line(unwritable, 2, "--output=/proc/segjax_masks: cannot be written")
    assert "step" not in unwritable.stdout  # refused before the model was restored
    assert file_hashes(inputs) == before


@pytest.mark.slow
def test_a_camera_rotated_jpeg_is_predicted_as_viewers_show_it(trained, tmp_path):
    """Issue 52, 14: a JPEG stored 40x60 with EXIF orientation 6 (turn 90 degrees clockwise)
    is shown 60x40; its mask is written 60x40, over what the user sees."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(stored).save(inputs / "phone.jpg", exif=exif)
    result = run(predict_command(trained, inputs, tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.asarray(Image.open(tmp_path / "out" / "phone.png")).shape == (60, 40)
    assert "phone 60x40" in result.stdout


@pytest.mark.slow
def test_an_image_too_large_for_the_memory_goes_by_tiles_that_fit(trained, tmp_path):
    """Issue 52, 7: without --tile, an image whose whole-image pass would need more than the
    budget is predicted by the largest tiles that fit, said on its line, the same masks as
    those tiles given by hand; a budget no tile fits is one error line."""
    from segjax.inference import load_predictor
    from segjax.memory_budget import automatic_tile

    predictor = load_predictor(str(trained))
    per_pixel = predictor.bytes_per_pixel()
    image = np.random.default_rng(1).integers(0, 255, (600, 640, 3), dtype=np.uint8)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image).save(inputs / "big.png")
    limit_mib = max(1, int(1.5 * per_pixel * 256 * 256 / 2**20) + 1)
    expected = automatic_tile(per_pixel, 608, 640, limit_mib * 2**20, predictor.multiple)
    assert 128 <= expected < 600
    auto = run(predict_command(trained, inputs, tmp_path / "auto", f"--memory_limit={limit_mib}"))
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert f"big 600x640 by tiles of {expected} (whole: ~" in auto.stdout
    by_hand = run(predict_command(trained, inputs, tmp_path / "hand", f"--tile={expected}"))
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "auto" / "big.png")),
        np.asarray(Image.open(tmp_path / "hand" / "big.png")),
    )
    whole = run(predict_command(trained, inputs, tmp_path / "whole"))  # the default budget
    assert whole.returncode == 0 and "by tiles" not in whole.stdout, whole.stderr[-3000:]
    if 1.5 * per_pixel * 128 * 128 > 2**20:  # no tile fits 1 MiB: said, not an XLA abort
        tiny = run(predict_command(trained, inputs, tmp_path / "tiny", "--memory_limit=1"))
        assert_one_error_line(tiny, 1, "big.png (600x640): even tiles of 128 pixels need")


@pytest.mark.slow
def test_images_far_from_the_training_size_are_named_and_resize_train_maps_back(
    trained, tfds_dir, tmp_path
):
    """Issue 53: a run trained on whole images resized to 32x32 warns, once, for a 200x200
    image and not for a 40x40 one; --resize train predicts at 32x32 and maps the mask back to
    200x200, as the predictor with that size does; a crop-trained run refuses --resize."""
    from segjax.inference import load_predictor, predict_probabilities

    workdir = tmp_path / "whole"
    trained_whole = run(
        train_command(tfds_dir, workdir, "--config.data.augment.whole_image=True",
                      "--config.data.eval_size=()", "--config.total_steps=2")
    )  # fmt: skip
    assert trained_whole.returncode == 0, trained_whole.stderr[-3000:]
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(big).save(inputs / "big.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(inputs / "ok.png")
    plain = run(predict_command(workdir, inputs, tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    warnings = [line for line in plain.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(inputs / "big.png") in warnings[0]
    assert "200x200 is far from the 32x32" in warnings[0] and "--resize train" in warnings[0]
    resized = run(predict_command(workdir, inputs, tmp_path / "resized", "--resize", "train"))
    assert resized.returncode == 0 and "warning:" not in resized.stderr, resized.stderr[-3000:]
    mask = np.asarray(Image.open(tmp_path / "resized" / "big.png"))
    predictor = load_predictor(str(workdir))
    at_32 = dataclasses.replace(predictor, eval_size=(32, 32))
    expected = np.argmax(predict_probabilities(at_32, big), axis=-1)
    assert mask.shape == (200, 200)
    np.testing.assert_array_equal(mask, expected.astype(np.uint8))
    refused = run(predict_command(trained, inputs, tmp_path / "crops", "--resize", "train"))
    assert_one_error_line(refused, 2, "--resize train:", "was not trained on whole images")


RUN_STABLEHLO = (
    "import sys, numpy as np; from segjax.inference import load_stablehlo; "
    "np.save(sys.argv[3], np.asarray(load_stablehlo(sys.argv[1])(np.load(sys.argv[2]))))"
)


def export_command(workdir, fmt, output, *extra):
    return [sys.executable, "-m", "segjax.export", "--workdir", str(workdir), "--format", fmt,
            "--output", str(output), "--checkpoint", "latest", *extra]  # fmt: skip


def jax_logits(workdir, layout="nhwc"):
    import jax

    from segjax.export import export_function
    from segjax.inference import restore

    restored = restore(str(workdir), "latest")
    return restored, jax.jit(export_function(restored, layout))


@pytest.mark.slow
def test_stablehlo_artifact_gives_the_jax_logits_in_a_fresh_process(trained, tmp_path):
    artifact = tmp_path / "model.stablehlo"
    result = run(export_command(trained, "stablehlo", artifact))
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "model.stablehlo.json").read_text())
    assert info["input"]["shape"] == ["batch", "8*h", "8*w", 3] and info["input"]["multiple"] == 8
    assert info["output"]["classes"] == ["background", "ellipse", "rectangle", "triangle"]
    assert info["input"]["mean"] == [0.485, 0.456, 0.406] and info["output"]["meaning"] == "logits"
    _, forward = jax_logits(trained)
    rng = np.random.default_rng(0)
    for shape in ((1, 64, 96, 3), (3, 40, 24, 3)):  # any batch, any multiple of 8
        x = rng.normal(size=shape).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        loaded = run(
            [
                sys.executable,
                "-c",
                RUN_STABLEHLO,
                str(artifact),
                str(tmp_path / "x.npy"),
                str(tmp_path / "y.npy"),
            ]
        )
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        assert np.abs(np.load(tmp_path / "y.npy") - np.asarray(forward(x))).max() <= 1e-5
    # The sidecar names the model file by its sha256 (issue 25): a model file that is not the
    # one exported beside it (here: changed afterwards) is refused, never run.
    assert info["file_sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    result = run([sys.executable, "-m", "segjax.predict", "--model", str(artifact),
                  "--input", str(image), "--output", str(tmp_path / "out")])  # fmt: skip
    assert_one_error_line(result, 2, f"{artifact}: its sidecar {artifact}.json describes another")


@pytest.mark.parity
def test_onnx_export_matches_jax(trained, tmp_path):
    # Not imported here: jax2onnx patches flax while it converts, in the export's own process.
    if importlib.util.find_spec("jax2onnx") is None:
        pytest.skip("the deploy extra is not installed: pip install -e '.[deploy]'")
    ort = pytest.importorskip("onnxruntime")
    _, forward = jax_logits(trained)
    rng = np.random.default_rng(0)
    for size in ((32, 48), (64, 64)):
        model = tmp_path / f"model_{size[0]}x{size[1]}.onnx"
        result = run(export_command(trained, "onnx", model, "--size", f"{size[0]}x{size[1]}"))
        assert result.returncode == 0, result.stderr[-3000:]
        session = ort.InferenceSession(str(model))
        for batch in (1, 3):
            x = rng.normal(size=(batch, *size, 3)).astype(np.float32)
            got = session.run(None, {session.get_inputs()[0].name: x})[0]
            expected = np.asarray(forward(x))
            assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parity
def test_predict_with_exported_models_needs_no_workdir(trained, tmp_path):
    """``predict --model``: the StableHLO file gives the workdir's masks; the ONNX file (one
    input size, so tiles of that size) gives the workdir's masks predicted with the same tiles."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(inputs / "a.png")
    exported = {"stablehlo": [], "onnx": ["--size", "32"]}
    if importlib.util.find_spec("jax2onnx") is None:
        del exported["onnx"]  # the deploy extra is not installed
    for fmt, extra in exported.items():
        model = tmp_path / f"model.{fmt}"
        result = run(export_command(trained, fmt, model, *extra))
        assert result.returncode == 0, result.stderr[-3000:]
        tiles = ["--tile", "32", "--overlap", "8"] if fmt == "onnx" else []
        masks = {}
        for source in (
            ["--model", str(model)],
            ["--workdir", str(trained), "--checkpoint", "latest"],
        ):
            out = tmp_path / f"out_{fmt}_{source[0][2:]}"
            result = run([sys.executable, "-m", "segjax.predict", *source, "--input",
                          str(inputs), "--output", str(out), *tiles])  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
            masks[source[0]] = np.asarray(Image.open(out / "a.png"))
        assert (masks["--model"] == masks["--workdir"]).mean() > 0.999, fmt
        if fmt == "onnx":  # deployment needs no JAX: the same masks with JAX made unimportable
            out = tmp_path / "out_onnx_without_jax"
            result = run([sys.executable, "-c", WITHOUT_JAX, "--model", str(model), "--input",
                          str(inputs), "--output", str(out), *tiles])  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
            np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), masks["--model"])
            assert_overlap_fits_the_onnx_size(model, inputs, tmp_path)


def assert_overlap_fits_the_onnx_size(model, inputs, tmp_path):
    """Issue 25, case 6: a 32x32 ONNX model with predict's default overlap (64) predicts, the
    overlap fitted to the model's size; an --overlap given that cannot fit is one error line,
    exit 2, the output folder untouched."""
    command = [sys.executable, "-m", "segjax.predict", "--model", str(model), "--input",
               str(inputs), "--output"]  # fmt: skip
    result = run([*command, str(tmp_path / "out_default_overlap")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiles of 32 pixels (the model's input size): overlap 8" in result.stdout
    out = tmp_path / "out_refused"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"kept")
    before = file_hashes(out)
    result = run([*command, str(out), "--overlap", "32"])
    assert_one_error_line(result, 2, "--overlap=32 must be less than the 32-pixel tiles")
    assert file_hashes(out) == before


# segjax.predict run with JAX, grain and TensorFlow Datasets unimportable (any import of them, or
# of their submodules, raises ImportError).
WITHOUT_JAX = """
import importlib.abc, runpy, sys
BLOCKED = ("jax", "jaxlib", "flax", "optax", "orbax", "grain", "tensorflow_datasets", "tensorflow")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: predict --model must not need it")
sys.meta_path.insert(0, Block())
sys.argv[0] = "segjax.predict"
runpy.run_module("segjax.predict", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parity
def test_int8_export_is_quantised_and_keeps_the_masks(trained, shapes_small, tmp_path):
    if importlib.util.find_spec("jax2onnx") is None:
        pytest.skip("the deploy extra is not installed: pip install -e '.[deploy]'")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    files = {}
    calibrate = ["--int8", "--calibration_images", "16"]
    for name, extra in (
        ("fp32", []),
        ("int8", calibrate),
        ("int8_percentile", [*calibrate, "--int8_percentile", "99.9"]),
    ):
        files[name] = tmp_path / f"{name}.onnx"
        result = run(export_command(trained, "onnx", files[name], "--size", "64", *extra))
        assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "int8.onnx.json").read_text())["quantization"]
    assert info["calibration"] == "16 random 64x64 crops of the run's training split"
    assert info["type"].endswith("uint8 per tensor (min/max)")
    assert 0.0 <= info["miou_against_float32"] <= 1.0
    percentile = json.loads((tmp_path / "int8_percentile.onnx.json").read_text())["quantization"]
    assert percentile["type"].endswith("uint8 per tensor (percentile 99.9)")
    graph = onnx.load(str(files["int8"])).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(np.prod(t.dims) for t in int8_weights) > 0.95 * sum(
        np.prod(t.dims) for t in onnx.load(str(files["fp32"])).graph.initializer
    )  # (almost) every weight is stored as int8
    sessions = {k: ort.InferenceSession(str(path)) for k, path in files.items()}
    from segjax.data.augment import normalize

    source = shapes_small.split("test")
    images = np.stack([normalize(source[i]["image"], None, None) for i in range(8)])
    masks = {
        k: s.run(None, {s.get_inputs()[0].name: images})[0].argmax(-1) for k, s in sessions.items()
    }
    # 0.96 measured on this barely trained model (12 steps); 0.65 when a tensor's range was
    # infinite (the -inf padding the ResNet stem had)
    assert (masks["int8"] == masks["fp32"]).mean() > 0.9
    assert (masks["int8_percentile"] == masks["fp32"]).mean() > 0.9


def test_int8_is_refused_for_stablehlo(tmp_path):
    result = run(export_command(tmp_path, "stablehlo", tmp_path / "m.stablehlo", "--int8"))
    assert_one_error_line(result, 2, "--int8 quantises ONNX models: use it with --format onnx")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--int8_percentile", "99.9"], "--int8_percentile calibrates an int8 model: use it"),
        (["--int8", "--int8_percentile", "101"], "--int8_percentile=101 must be in (50, 100]"),
    ],
)
def test_a_percentile_without_int8_or_out_of_range_is_refused(tmp_path, flags, message):
    result = run(export_command(tmp_path, "onnx", tmp_path / "m.onnx", *flags))
    assert_one_error_line(result, 2, message)


def test_the_overlap_fits_an_exported_models_fixed_size():
    """Issue 25: an ONNX file exported at 64x64 predicts by 64-pixel tiles; the default overlap
    (64) shrinks to fit, an --overlap the user gave that cannot fit is refused by name."""
    from segjax.errors import UserError
    from segjax.inference import Predictor
    from segjax.predict import fitted_overlap

    fixed = Predictor(None, ("a", "b"), 3, None, None, 32, 0, fixed_size=(64, 64))
    assert fitted_overlap(fixed, 0, 64, given=False) == 16
    assert fitted_overlap(fixed, 256, 32, given=True) == 32
    with pytest.raises(UserError, match="--overlap=64 must be less than the 64-pixel tiles"):
        fitted_overlap(fixed, 256, 64, given=True)
    free = Predictor(None, ("a", "b"), 3, None, None, 32, 0)
    assert fitted_overlap(free, 0, 64, given=False) == 64


def test_unusable_outputs_are_refused_before_any_work(tmp_path):
    """Issue 25: export's --output a directory, predict's --output a file: one error line, no
    model restored or converted (the workdir here does not even exist), no temporary left."""
    folder = tmp_path / "existing"
    folder.mkdir()
    result = run(export_command(tmp_path / "no_run", "onnx", folder))
    assert_one_error_line(result, 2, f"--output={folder}: is a directory")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    result = run([sys.executable, "-m", "segjax.predict", "--workdir", str(tmp_path / "no_run"),
                  "--input", str(image), "--output", str(image)])  # fmt: skip
    assert_one_error_line(result, 2, f"--output={image}: is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "existing"]


def test_an_exported_model_without_a_usable_sidecar_is_named(tmp_path):
    from segjax.errors import UserError
    from segjax.inference import load_exported

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(UserError, match=r"m.onnx.json: the export's sidecar is not readable"):
        load_exported(str(model))  # no sidecar
    (tmp_path / "m.onnx.json").write_text('{"format": "onnx", "input": {"layout": "nhwc"}}')
    with pytest.raises(UserError, match=r"m.onnx.json: .*KeyError\('output'\)"):
        load_exported(str(model))
