"""Reading and writing PyTorch state dicts without torch and without running code from a file.

``.safetensors`` is read and written through the ``safetensors`` package's NumPy API.
``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (``torch.save``'s zip archives and legacy streams) are
read by ``torch_pickle.read_torch_file``, which rebuilds tensors and plain containers only and
refuses any other global a pickle names, by name, without importing or calling it.
"""

import hashlib
import json
import os

import ml_dtypes
import numpy as np

from segjax.errors import UserError
from segjax.models.weights.torch_pickle import TorchFileError, read_torch_file

SAFETENSORS = (".safetensors",)
PICKLES = (".pth", ".pt", ".bin", ".ckpt")
# Where training scripts commonly nest the state dict inside a saved checkpoint dict.
_NESTED = ("state_dict", "model", "model_state_dict", "module")


class WeightsFileError(UserError):
    """A weights file that cannot be read or does not fit the model (exit status 2)."""


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors by name as NumPy arrays, the file's string metadata) of a weights file."""
    if not os.path.isfile(path):
        raise WeightsFileError(f"{path}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in SAFETENSORS:
        return _read_safetensors(path)
    if suffix in PICKLES:
        return _read_torch_pickle(path), {}
    raise WeightsFileError(
        f"{path}: unknown weights format {suffix!r}; expected one of {list(SAFETENSORS + PICKLES)}"
    )


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as file:
            metadata = dict(file.metadata() or {})
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except SafetensorError as error:
        raise WeightsFileError(f"{path}: not a readable safetensors file ({error})") from None
    except (TypeError, ValueError) as error:  # e.g. bfloat16, which NumPy lacks
        raise WeightsFileError(f"{path}: cannot read its tensors with NumPy ({error})") from None
    return tensors, metadata


def _read_torch_pickle(path: str) -> dict[str, np.ndarray]:
    try:
        loaded = read_torch_file(path)
    except TorchFileError as error:
        raise WeightsFileError(f"{path}: refused: {error}") from None
    except OSError as error:
        raise WeightsFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    for key in _NESTED:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if (
        not isinstance(loaded, dict)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in loaded.items())
    ):
        raise WeightsFileError(f"{path}: holds no state dict (a mapping of names to tensors)")
    # NumPy has no bfloat16 of its own: such tensors are widened to float32 (exactly).
    return {
        key: value.astype(np.float32) if value.dtype == ml_dtypes.bfloat16 else value
        for key, value in loaded.items()
    }


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Writes atomically (a crash leaves the old file or none, never half of one) and
    reproducibly: the same tensors and metadata give the same bytes."""
    from safetensors.numpy import save_file

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(
            # np.asarray keeps a 0-d tensor (num_batches_tracked) 0-d; ascontiguousarray would not
            {key: np.asarray(value, order="C") for key, value in tensors.items()},
            temporary,
            metadata=metadata,
        )
        _sort_metadata(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _sort_metadata(path: str) -> None:
    """safetensors writes its metadata in hash-map order, which differs between runs; the same
    keys sorted take the same bytes, so the header is rewritten in place with them sorted."""
    with open(path, "r+b") as file:
        length = int.from_bytes(file.read(8), "little")
        raw = file.read(length)
        header = json.loads(raw)
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= length:  # the same keys and values: the same length, padded as before
            file.seek(8)
            file.write(text.ljust(length, b" "))
