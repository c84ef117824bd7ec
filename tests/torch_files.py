"""Writes ``torch.save``'s two file formats without torch, for the reader's tests.

The pickles name torch's globals (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``)
exactly as torch writes them: stand-ins registered under those names in ``sys.modules`` while
pickling (``pickle`` writes a global by its module and name). ``write_zip`` gives the archive of
torch >= 1.6, ``write_legacy`` the stream of torch < 1.6, the format of the packaged files.
``tests/test_pretrained_live.py`` checks both against ``torch.load`` where torch is installed.
"""

import contextlib
import io
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from unittest import mock

import ml_dtypes
import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
}


class Storage:
    """A storage: its key, its elements (C order) and its type."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.array(data, order="C").reshape(-1)


class Tensor:
    """Pickles as torch pickles a tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return (
            rebuild,
            (self.storage, self.offset, self.size, self.stride, False, OrderedDict()),
        )


def tensors_of(arrays: dict[str, np.ndarray]) -> OrderedDict:
    """A state dict of ``Tensor``s, one storage per array."""
    out = OrderedDict()
    for index, (key, array) in enumerate(arrays.items()):
        array = np.array(array, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
        stride = tuple(s // array.itemsize for s in array.strides)
        out[key] = Tensor(Storage(str(index), array), 0, tuple(array.shape), stride)
    return out


@contextlib.contextmanager
def _torch_names():
    """Stand-ins for the globals torch's pickles name, while pickling."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is written
        raise AssertionError("a stand-in")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in STORAGES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    with mock.patch.dict(sys.modules, {"torch": torch, "torch._utils": utils}):
        yield torch


class _Pickler(pickle.Pickler):
    def __init__(self, file, torch, numels: dict[str, int] | None = None):
        super().__init__(file, protocol=2)
        self.torch, self.storages, self.numels = torch, {}, numels or {}

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj
        storage_type = getattr(self.torch, STORAGES[obj.data.dtype])
        numel = self.numels.get(obj.key, obj.data.size)
        return ("storage", storage_type, obj.key, "cpu", numel)


def pickled(obj, numels: dict[str, int] | None = None) -> tuple[bytes, dict[str, Storage]]:
    """(the pickle torch would write of ``obj``, its storages by key); ``numels`` overrides the
    element count a persistent id declares."""
    buffer = io.BytesIO()
    with _torch_names() as torch:
        pickler = _Pickler(buffer, torch, numels)
        pickler.dump(obj)
    return buffer.getvalue(), pickler.storages


def write_zip(path, obj, numels=None, data_pkl: bytes | None = None) -> None:
    """torch >= 1.6's archive: archive/data.pkl, archive/data/<key>, archive/version."""
    data, storages = pickled(obj, numels)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data if data_pkl is None else data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, storage in storages.items():
            archive.writestr(f"archive/data/{key}", storage.data.tobytes())
        archive.writestr("archive/version", "3\n")


def write_legacy(path, obj, numels=None) -> None:
    """torch < 1.6's stream: magic, protocol, system info, the object, its storage keys, then
    each storage as an int64 element count and its bytes."""
    data, storages = pickled(obj, numels)
    with open(path, "wb") as file:
        for header in (
            MAGIC,
            1001,
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 4}},
        ):
            pickle.dump(header, file, protocol=2)
        file.write(data)
        pickle.dump(list(storages), file, protocol=2)
        for storage in storages.values():
            file.write(np.int64(storage.data.size).tobytes())
            file.write(storage.data.tobytes())
