""".pth / .pt files read without torch (``segjax.models.weights.torch_pickle``): both of
torch.save's formats, every dtype, strided and offset tensors, and every kind of bad file refused
by name with nothing run. The files are written by ``tests/torch_files.py`` as torch writes them
(``test_pretrained_live.py`` checks the reader against ``torch.load`` where torch is installed).
"""

import json
import os
import pickle
import struct
import sys

import ml_dtypes
import numpy as np
import pytest

from segjax.models import create_classifier
from segjax.models.weights import WeightsFileError, load_weights, read_state_dict
from segjax.models.weights.torch_pickle import read_torch_file
from tests import pretrained_reference as ref
from tests import torch_files
from tests.cli_utils import assert_one_error_line, run
from tests.test_pretrained import FIXTURES, WritesAFile

WRITERS = {"zip": torch_files.write_zip, "legacy": torch_files.write_legacy}


@pytest.mark.parametrize("fmt", WRITERS)
def test_both_formats_round_trip_every_dtype_and_layout(tmp_path, fmt):
    rng = np.random.default_rng(0)
    arrays = {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "half": rng.normal(size=(5,)).astype(np.float16),
        "double": rng.normal(size=(2, 3)).astype(np.float64),
        "brain": rng.normal(size=(7,)).astype(ml_dtypes.bfloat16),
        "bn.num_batches_tracked": np.array(12, np.int64),
    }
    state = torch_files.tensors_of(arrays)
    shared = torch_files.Storage("shared", np.arange(20, dtype=np.float32))
    state["transposed"] = torch_files.Tensor(shared, 0, (3, 4), (1, 3))  # a .t() view
    state["offset"] = torch_files.Tensor(shared, 12, (2, 4), (4, 1))  # a later slice
    path = str(tmp_path / f"w.{'pth' if fmt == 'zip' else 'pt'}")
    WRITERS[fmt](path, {"state_dict": state, "epoch": 3})
    loaded = read_torch_file(path)
    assert loaded["epoch"] == 3
    out = loaded["state_dict"]
    for key, array in arrays.items():
        assert out[key].dtype == array.dtype and np.array_equal(out[key], array), key
    assert np.array_equal(out["transposed"], np.arange(12, dtype=np.float32).reshape(4, 3).T)
    assert np.array_equal(out["offset"], np.arange(12, 20, dtype=np.float32).reshape(2, 4))
    # read_state_dict finds the nested state dict and widens bfloat16 (NumPy has none).
    tensors, _ = read_state_dict(path)
    assert tensors["brain"].dtype == np.float32
    assert np.array_equal(tensors["brain"], arrays["brain"].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_other_float_dtypes_load_into_a_model(tmp_path, dtype):
    tensors = ref.seeded_state_dict(FIXTURES["resnet18"]["keys"])
    cast = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in tensors.items()}
    path = str(tmp_path / "r18.pth")
    torch_files.write_zip(path, torch_files.tensors_of(cast))
    variables, report = load_weights(
        create_classifier("resnet18"), ref.segjax_init("resnet18"), read_state_dict(path)[0], path
    )
    assert report.parameters == 11_689_512
    kernel = variables["params"]["encoder"]["conv1"]["kernel"]
    assert kernel.dtype == np.float32
    expected = cast["conv1.weight"].astype(np.float32).transpose(2, 3, 1, 0)
    assert np.array_equal(kernel, expected)


def test_integer_tensor_where_weights_belong_is_named(tmp_path):
    tensors = ref.seeded_state_dict(FIXTURES["resnet18"]["keys"])
    tensors["layer2.0.conv1.weight"] = tensors["layer2.0.conv1.weight"].astype(np.int32)
    path = str(tmp_path / "r18.pth")
    torch_files.write_legacy(path, torch_files.tensors_of(tensors))
    with pytest.raises(WeightsFileError, match=r"tensor layer2.0.conv1.weight is int32, not fl"):
        tensors, _ = read_state_dict(path)
        load_weights(create_classifier("resnet18"), ref.segjax_init("resnet18"), tensors, "x")


class RunsACommand:
    """Unpickling it would run ``touch path`` through os.system."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class TamperedTensor(torch_files.Tensor):
    """A tensor whose pickle, after rebuilding it, sets its offset to a string (BUILD)."""

    def __reduce__(self):
        return (*super().__reduce__(), (None, {"offset": "x"}))


def _one_tensor():
    return torch_files.tensors_of({"conv1.weight": np.zeros((2, 3), np.float32)})


def _bad_files(directory, marker) -> dict[str, tuple[str, str]]:
    """name -> (a bad .pth file, the words its refusal must contain)."""
    files = {}

    def path(name, suffix=".pth"):
        return str(directory / f"{name}{suffix}")

    with open(path("reduce_plain"), "wb") as file:  # the existing malicious file
        pickle.dump({"conv1.weight": WritesAFile(str(marker))}, file)
    files["reduce_plain"] = (path("reduce_plain"), ".open, which is not part of a state dict")
    torch_files.write_zip(
        path("reduce_zip"), {}, data_pkl=pickle.dumps({"w": WritesAFile(str(marker))}, 2)
    )
    files["reduce_zip"] = (path("reduce_zip"), ".open, which is not part of a state dict")
    torch_files.write_zip(
        path("system_zip"), {}, data_pkl=pickle.dumps({"w": RunsACommand(marker)}, 2)
    )
    files["system_zip"] = (path("system_zip"), "names posix.system, which is not part of")
    shared = torch_files.Storage("0", np.arange(6, dtype=np.float32))
    beyond = {"w": torch_files.Tensor(shared, 4, (2, 3), (3, 1))}
    torch_files.write_zip(path("offset_beyond"), beyond)
    files["offset_beyond"] = (path("offset_beyond"), "reaches element 9 of a storage of 6")
    torch_files.write_zip(path("size_beyond_zip"), _one_tensor(), numels={"0": 1000})
    files["size_beyond_zip"] = (path("size_beyond_zip"), "its 1,000 elements need 4,000")
    torch_files.write_legacy(path("size_beyond_legacy"), _one_tensor(), numels={"0": 1000})
    files["size_beyond_legacy"] = (path("size_beyond_legacy"), "6 elements where its id says 1,000")
    for name, writer in WRITERS.items():
        full = path(f"truncated_{name}")
        big = torch_files.tensors_of({"w": np.ones((64, 64), np.float32)})
        writer(full, big)
        with open(full, "r+b") as file:
            file.truncate(os.path.getsize(full) // 2)
        files[f"truncated_{name}"] = (
            full,
            "truncated or corrupt" if name == "zip" else "truncated: storage '0'",
        )
    shared = torch_files.Storage("0", np.arange(6, dtype=np.float32))
    torch_files.write_zip(path("tampered"), {"w": TamperedTensor(shared, 0, (6,), (1,))})
    files["tampered"] = (path("tampered"), "it modifies a rebuilt Tensor (BUILD)")
    loop = []
    loop.append(loop)
    torch_files.write_zip(path("self_reference"), {}, data_pkl=pickle.dumps({"w": loop}, 2))
    files["self_reference"] = (path("self_reference"), "containers nested more than 64 deep")
    huge = path("huge_entry")
    torch_files.write_zip(huge, _one_tensor())
    _claim_size(huge, "archive/data/0", 0xFFFF0000)
    files["huge_entry"] = (huge, "claims 4,294,901,760 bytes, more than the whole file's")
    files.update(_exhausting_files(path))
    files.update(_tampering_files(path))
    files.update(_undecodable_files(path))
    return files


def _exhausting_files(path) -> dict[str, tuple[str, str]]:
    """Small files whose naive reading takes unbounded time or memory (issue 52, 1-2, 8)."""
    files = {}
    shared = []
    for _ in range(40):  # one list referenced twice at every level: 2^40 paths, 41 objects
        shared = [shared, shared]
    torch_files.write_zip(path("shared_dag"), {}, data_pkl=pickle.dumps({"w": shared}, 2))
    files["shared_dag"] = (path("shared_dag"), "its structure expands to 2,199,023,255,552 objects")
    one = torch_files.Storage("0", np.zeros(1, np.float32))
    torch_files.write_zip(path("stride0"), {"w": torch_files.Tensor(one, 0, (2**28,), (0,))})
    files["stride0"] = (path("stride0"), "would produce 268,435,456 elements")
    torch_files.write_zip(path("stride0_4tib"), {"w": torch_files.Tensor(one, 0, (2**40,), (0,))})
    files["stride0_4tib"] = (path("stride0_4tib"), "would produce 1,099,511,627,776 elements")
    tensor = torch_files.tensors_of({"w": np.zeros(65536, np.float32)})["w"]
    torch_files.write_zip(path("references"), {f"w{i}": tensor for i in range(2000)})
    files["references"] = (path("references"), "would produce 131,072,000 elements")
    dims = torch_files.Tensor(one, 0, (1,) * 65, (0,) * 65)
    torch_files.write_zip(path("dims65"), {"w": dims})
    files["dims65"] = (path("dims65"), "a tensor of 65 dimensions (at most 32)")
    empty = torch_files.Tensor(one, 0, (0, 2**70), (1, 1))
    torch_files.write_zip(path("empty_huge"), {"w": empty})
    files["empty_huge"] = (path("empty_huge"), "tensor 'w' of size (0, 1180591620717411303424)")
    return files


def _build_on(module: str, name: str, state) -> bytes:
    """A pickle that looks up a global and applies BUILD to it (no call), then stops."""
    body = pickle.dumps(state, 2)[2:-1]  # without PROTO and STOP
    return b"\x80\x02" + f"c{module}\n{name}\n".encode() + body + b"b."


def _tampering_files(path) -> dict[str, tuple[str, str]]:
    """Files that would change the reader's own objects through BUILD (issue 52, 3)."""
    files = {}
    defaults = {"__defaults__": (None, 0, (6,), (1,))}
    for label, state in (("dict", defaults), ("slots", (None, defaults))):
        pkl = _build_on("torch._utils", "_rebuild_tensor_v2", state)
        torch_files.write_zip(path(f"build_rebuilder_{label}"), {}, data_pkl=pkl)
        files[f"build_rebuilder_{label}"] = (
            path(f"build_rebuilder_{label}"),
            "it modifies torch._utils._rebuild_tensor_v2 (BUILD)",
        )
    pkl = _build_on("collections", "OrderedDict", {"x": 1})
    torch_files.write_zip(path("build_constructor"), {}, data_pkl=pkl)
    files["build_constructor"] = (
        path("build_constructor"),
        "it modifies collections.OrderedDict (BUILD)",
    )
    # A fresh OrderedDict whose BUILD would shadow its own items() method.
    pkl = b"\x80\x02ccollections\nOrderedDict\n)R" + pickle.dumps({"items": 1}, 2)[2:-1] + b"b."
    torch_files.write_zip(path("build_shadows"), {}, data_pkl=pkl)
    files["build_shadows"] = (path("build_shadows"), "sets attributes of an OrderedDict other")
    return files


def _undecodable_files(path) -> dict[str, tuple[str, str]]:
    """Archives whose entries zipfile or zlib cannot decode (issue 52, 8)."""
    files = {}
    deflated = path("garbled_deflate")
    _deflated_copy(_one_tensor(), deflated)
    with open(deflated, "r+b") as file:
        data = bytearray(file.read())
        start = data.find(b"archive/data.pkl") + len("archive/data.pkl")
        data[start + 2 : start + 12] = b"\xff" * 10  # inside data.pkl's compressed bytes
        file.seek(0)
        file.write(data)
    files["garbled_deflate"] = (deflated, "archive entry 'archive/data.pkl' is unreadable")
    says_deflate = path("stored_says_deflate")
    torch_files.write_zip(says_deflate, _one_tensor())
    _edit_central(says_deflate, "archive/data/0", 10, "<H", 8)
    files["stored_says_deflate"] = (says_deflate, "archive entry 'archive/data/0' is unreadable")
    encrypted = path("encrypted")
    torch_files.write_zip(encrypted, _one_tensor())
    _edit_central(encrypted, "archive/data/0", 8, "<H", 1)
    files["encrypted"] = (encrypted, "archive entry 'archive/data/0' is encrypted")
    return files


def _deflated_copy(obj, path) -> None:
    import zipfile

    stored = str(path) + ".stored"
    torch_files.write_zip(stored, obj)
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
    os.remove(stored)


def _claim_size(path: str, member: str, size: int) -> None:
    """Rewrites the central directory so that ``member`` claims ``size`` uncompressed bytes."""
    _edit_central(path, member, 24, "<I", size)


def _edit_central(path: str, member: str, offset: int, fmt: str, value: int) -> None:
    """Packs ``value`` at ``offset`` of ``member``'s central directory record."""
    with open(path, "rb") as file:
        data = bytearray(file.read())
    name = member.encode()
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_length] == name:
            struct.pack_into(fmt, data, start + offset, value)
            break
        start += 4
    else:
        raise AssertionError(f"{member} not in {path}")
    with open(path, "wb") as file:
        file.write(data)


def test_bad_files_are_refused_by_name_and_run_nothing(tmp_path):
    """Each refused with its reason, in one line, nothing run; and none changes the reader:
    read again after all of them, each is refused the same way and a good file reads."""
    marker = tmp_path / "pwned"
    files = _bad_files(tmp_path, marker)
    for _ in range(2):
        for name, (path, words) in files.items():
            with pytest.raises(WeightsFileError) as raised:
                read_state_dict(path)
            message = str(raised.value)
            assert message.startswith(f"{path}: refused: ") and words in message, (name, message)
            assert "\n" not in message, name
            assert not marker.exists(), name
    good = tmp_path / "good.pth"
    torch_files.write_zip(good, torch_files.tensors_of({"w": np.arange(6.0).reshape(2, 3)}))
    tensors, _ = read_state_dict(str(good))
    np.testing.assert_array_equal(tensors["w"], np.arange(6.0).reshape(2, 3))


@pytest.mark.slow
def test_bad_files_through_the_convert_command(tmp_path):
    """Each refusal is one ``error:`` line and exit 2 from the command that reads the file."""
    marker = tmp_path / "pwned"
    for name, (path, words) in _bad_files(tmp_path, marker).items():
        result = run(
            [sys.executable, "-m", "segjax.convert", "--from", path, "--arch",
             "classifier", "--encoder", "resnet18"]
        )  # fmt: skip
        assert_one_error_line(result, 2, words)
        assert not marker.exists(), name


def test_fuzzed_files_are_loaded_or_refused_within_limits(tmp_path):
    """300 seeded mutants of a small state dict (tests/torch_fuzz.py), each read in a forked
    process under a 10 s and 1 GiB limit: loaded or refused in one line, never a traceback,
    never over a limit, never a reader that reads a good file differently afterwards."""
    out = tmp_path / "fuzz.json"
    result = run([sys.executable, "-m", "tests.torch_fuzz", "--mutants", "300", "--json", str(out)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["mutants"] == 300 and not summary["failures"]
    assert set(summary["outcomes"]) == {"loaded", "refused"}  # both kinds reached
    assert summary["slowest_s"] < 10 and summary["largest_peak_mib"] < 1024
