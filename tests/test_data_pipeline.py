"""Input pipelines: determinism, exact resume in a fresh process, multi-process sharding,
exactly-once evaluation, augmentation that keeps image and mask aligned."""

import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from segjax.data import DataError, eval_dataset, eval_plan, load_dataset, train_iterator
from segjax.data.augment import flip_and_rotate, random_scale_crop, resize, resize_whole
from tests.conftest import varied_items, write_folder


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batches_have_the_documented_layout(shapes_small, small_config):
    batch = next(
        train_iterator(shapes_small, small_config.data, 8, seed=0, process_index=0, process_count=1)
    )
    assert {k: (v.dtype.name, v.shape) for k, v in batch.items()} == {
        "image": ("float32", (8, 64, 64, 3)),
        "label": ("int32", (8, 64, 64)),
        "valid": ("bool", (8, 64, 64)),
        "index": ("int32", (8,)),
    }
    assert batch["label"].max() < 4 and not batch["label"][~batch["valid"]].any()
    assert abs(float(batch["image"][batch["valid"]].mean())) < 1.5  # normalised


def test_same_seed_same_batches_other_seed_other_batches(shapes_small, small_config):
    def run(seed):
        return take(train_iterator(shapes_small, small_config.data, 8, seed, 0, 1), 3)

    assert_batches_equal(run(0), run(0))
    assert not np.array_equal(run(0)[0]["index"], run(1)[0]["index"])


def test_each_epoch_is_a_new_permutation_of_the_split(shapes_small, small_config):
    batches = take(train_iterator(shapes_small, small_config.data, 8, 0, 0, 1), 24)
    order = np.concatenate([b["index"] for b in batches])
    first, second = order[:96], order[96:]
    assert sorted(first) == list(range(96)) and sorted(second) == list(range(96))
    assert not np.array_equal(first, second)


RESUME_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from configs.default import get_config
    from segjax.data import load_dataset, train_iterator
    mode, data_dir, path = sys.argv[1:4]
    config = get_config("small")
    config.data.data_dir = data_dir
    iterator = train_iterator(load_dataset(config.data), config.data, 8, 0, 0, 1)
    if mode == "save":
        for _ in range(5):
            next(iterator)
        json.dump(iterator.get_state(), open(path, "w"))
    else:
        iterator.set_state(json.load(open(path)))
        batches = [next(iterator) for _ in range(4)]
        np.savez(path + ".npz", **{f"{i}_{k}": v for i, b in enumerate(batches)
                                   for k, v in b.items()})
""")


def test_resume_in_a_fresh_process_continues_bitwise(
    shapes_small, small_config, tfds_dir, tmp_path
):
    """5 batches, state saved; a new process restores it and reads 4 more: the same as batches
    6-9 of an uninterrupted run, bit for bit."""
    state = str(tmp_path / "state.json")
    for mode in ("save", "restore"):
        subprocess.run(
            [sys.executable, "-c", RESUME_SCRIPT, mode, tfds_dir, state],
            check=True,
            cwd=str(pathlib.Path(__file__).parents[1]),
        )
    assert json.load(open(state))  # a small JSON-able dict
    resumed = np.load(state + ".npz")
    expected = take(train_iterator(shapes_small, small_config.data, 8, 0, 0, 1), 9)[5:]
    for i, batch in enumerate(expected):
        for key, value in batch.items():
            np.testing.assert_array_equal(resumed[f"{i}_{key}"], value, err_msg=key)


def test_two_processes_read_disjoint_halves_of_the_same_global_batches(shapes_small, small_config):
    steps = 12  # one epoch: 96 examples / global batch 8
    single = take(train_iterator(shapes_small, small_config.data, 8, 0, 0, 1), steps)
    halves = [
        take(train_iterator(shapes_small, small_config.data, 8, 0, p, 2), steps) for p in (0, 1)
    ]
    seen = []
    for step in range(steps):
        first, second = halves[0][step], halves[1][step]
        assert not set(first["index"]) & set(second["index"])
        for key in single[step]:  # together they are the one-process global batch, bitwise
            np.testing.assert_array_equal(
                np.concatenate([first[key], second[key]]), single[step][key], err_msg=key
            )
        seen += [*first["index"], *second["index"]]
    assert sorted(seen) == list(range(96))  # together they cover the split


@pytest.mark.parametrize("process_count", [1, 2, 3])
def test_eval_sees_every_example_exactly_once(shapes_small, small_config, process_count):
    """23 test examples, global batch 6 (not a divisor): padding rows have an empty valid mask,
    and the real rows cover the split once; every process runs batches of the same shapes."""
    global_batch = 6
    seen = []
    shapes = set()
    for p in range(process_count):
        batches = list(
            eval_dataset(shapes_small, "test", small_config.data, global_batch, p, process_count)
        )
        shapes.add(tuple(batch["image"].shape for batch in batches))
        for batch in batches:
            real = batch["valid"].reshape(len(batch["index"]), -1).any(axis=1)
            assert np.array_equal(real, batch["index"] >= 0)
            seen += list(batch["index"][real])
    assert sorted(seen) == list(range(23))
    assert len(shapes) == 1  # the same batch shapes on every process
    # 4 batches: 3 full, and the last shrunk to the 5 remaining rounded up to the process count.
    last_rows = -(-5 // process_count) * process_count
    assert [s[0] * process_count for s in shapes.pop()] == [6, 6, 6, last_rows]


@pytest.mark.parametrize("process_count", [1, 2])
def test_full_resolution_eval_batches_images_of_similar_size(tmp_path, tfds_dir, process_count):
    """Sizes 20x24 .. 32x44: a batch holds one 32-pixel size bucket on the canvas of its largest
    image, not the whole split's largest; every pixel of every image is there once."""
    from tests.test_data_builders import data_config

    items = varied_items(5)
    root = write_folder(tmp_path / "data", items, splits={"test": list(items)})
    data = data_config(name="folder", path=root, data_dir=tfds_dir, num_classes=2)
    dataset = load_dataset(data)
    source = dataset.split("test")
    sizes = [source[i]["mask"].shape for i in range(len(source))]

    plan = eval_plan(dataset, "test", data, 4, process_count)
    assert [len(b.examples) for b in plan] == [2, 3]  # buckets: width <= 32 and width in 33..64
    assert [b.rows for b in plan] == [2, 4 if process_count == 2 else 3]
    for batch in plan:
        assert batch.canvas == tuple(max(sizes[i][a] for i in batch.examples) for a in (0, 1))
    assert plan[-1].canvas == (32, 44)  # the largest image
    assert plan[0].canvas == (23, 29)

    seen = []
    for p in range(process_count):
        for batch, planned in zip(
            eval_dataset(dataset, "test", data, 4, p, process_count), plan, strict=True
        ):
            assert batch["image"].shape == (planned.rows // process_count, *planned.canvas, 3)
            for row, index in enumerate(batch["index"]):
                if index < 0:
                    assert not batch["valid"][row].any()
                    continue
                seen.append(int(index))
                mask = source[int(index)]["mask"]
                height, width = mask.shape
                assert batch["valid"][row].sum() == height * width  # no ignore label here
                np.testing.assert_array_equal(batch["label"][row, :height, :width], mask)
    assert sorted(seen) == list(range(5))


def test_eval_rows_divide_among_devices(shapes_small, small_config):
    plan = eval_plan(shapes_small, "test", small_config.data, 8, 1, row_multiple=4)
    assert [b.rows for b in plan] == [8, 8, 8]  # 23 examples: the last batch 7 -> 8 rows
    with pytest.raises(
        DataError,
        match=r"batch_size=6 must be a positive multiple of the processes and devices a batch "
        r"is split over \(4\)",
    ):
        eval_plan(shapes_small, "test", small_config.data, 6, 1, row_multiple=4)


def test_eval_size_resizes(shapes_small, small_config):
    data = small_config.data.copy_and_resolve_references()
    data.eval_size = (32, 48)
    batch = next(iter(eval_dataset(shapes_small, "validation", data, 4, 0, 1)))
    assert batch["image"].shape == (4, 32, 48, 3) and batch["valid"].all()


def test_masks_with_unknown_classes_fail_in_the_pipeline(shapes_small, small_config):
    import dataclasses

    dataset = dataclasses.replace(shapes_small, class_names=("background", "ellipse"))
    with pytest.raises(DataError, match=r"mask values \[.*\] are outside 0\.\.1"):
        next(iter(eval_dataset(dataset, "test", small_config.data, 4, 0, 1)))


def test_batch_size_must_divide_among_processes(shapes_small, small_config):
    with pytest.raises(
        DataError, match=r"batch_size=9 must be a positive multiple of the process count \(2\)"
    ):
        train_iterator(shapes_small, small_config.data, 9, 0, 0, 2)


def test_scale_crop_keeps_image_and_mask_aligned():
    """An image that encodes its own mask: after warping and flips they still agree."""
    blocks = np.kron(np.arange(16).reshape(4, 4) % 4, np.ones((16, 16), int)).astype(np.uint8)
    image = np.repeat((blocks * 60)[..., None], 3, axis=-1)
    rng = np.random.default_rng(0)
    for _ in range(10):
        out_image, out_mask, valid = random_scale_crop(image, blocks, (40, 56), (0.5, 2.0), rng)
        out_image, out_mask, valid = flip_and_rotate(
            [out_image, out_mask, valid], rng, True, True, False
        )
        assert out_image.shape == (40, 56, 3) and out_mask.shape == valid.shape == (40, 56)
        agree = np.abs(out_image[..., 0].astype(int) - out_mask.astype(int) * 60) < 30
        assert agree[valid].mean() > 0.9
        assert set(np.unique(out_mask)) <= {0, 1, 2, 3}  # nearest neighbour: no new labels


def test_whole_image_view_resizes_as_evaluation_does(shapes_small, small_config):
    """data.augment.whole_image: the whole image resized to image_size, every pixel valid,
    resampled as evaluation at data.eval_size resamples."""
    blocks = np.kron(np.arange(6).reshape(2, 3) % 4, np.ones((30, 20), int)).astype(np.uint8)
    image = np.repeat((blocks * 60)[..., None], 3, axis=-1)
    out_image, out_mask, valid, labels = resize_whole(image, blocks, (24, 40), [blocks * 7])
    assert out_image.shape == (24, 40, 3) and valid.all()
    np.testing.assert_array_equal(out_mask, resize(image, blocks, (24, 40))[1])
    np.testing.assert_array_equal(labels, out_mask * 7)  # labels resized as the mask
    data = small_config.data.copy_and_resolve_references()
    data.augment.whole_image, data.image_size = True, (40, 48)
    batch = next(train_iterator(shapes_small, data, 4, seed=0, process_index=0, process_count=1))
    assert batch["image"].shape == (4, 40, 48, 3) and batch["valid"].all()


def test_rot90_only_for_square_crops():
    rng = np.random.default_rng(0)
    a = np.arange(12).reshape(3, 4)
    assert all(flip_and_rotate([a], rng, False, False, True)[0].shape == (3, 4) for _ in range(8))
    square = np.arange(9).reshape(3, 3)
    shapes = {flip_and_rotate([square], rng, False, False, True)[0].tobytes() for _ in range(40)}
    assert len(shapes) == 4


def test_worker_processes_and_the_decoded_cache_give_the_same_batches(shapes_small, small_config):
    """data.num_workers: grain's worker processes compute the same batches, in the same order,
    as the threads of one process, and their iterator state restores as the threads' does;
    data.cache changes nothing but the work."""
    from segjax.data.pipeline import auto_workers

    def data(workers, cache=False):
        config = small_config.copy_and_resolve_references()
        with config.unlocked():
            config.data.num_workers, config.data.cache = workers, cache
        return config.data

    single = take(train_iterator(shapes_small, data(0), 8, 0, 0, 1), 6)
    # Decoded examples kept in memory (data.cache): the same batches, in workers too.
    assert_batches_equal(take(train_iterator(shapes_small, data(0, True), 8, 0, 0, 1), 6), single)
    workers = train_iterator(shapes_small, data(2, True), 8, 0, 0, 1)
    assert_batches_equal(take(workers, 3), single[:3])
    state = workers.get_state()
    workers.close()
    resumed = train_iterator(shapes_small, data(2), 8, 0, 0, 1)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), single[3:])
    resumed.close()
    assert auto_workers(2) == 0 and auto_workers(4) == 0
    assert auto_workers(16) == 8 and auto_workers(96) == 16
