"""Reading and writing PyTorch state dicts without running code from the file.

``.safetensors`` is read and written through the ``safetensors`` package's NumPy API (no torch
needed). ``.pth`` / ``.pt`` / ``.bin`` (pickles) are read only through ``torch.load(...,
weights_only=True)``, which refuses anything but tensors and plain containers, and only when torch
is installed; without it the error says how to convert the file. Nothing here calls
``pickle.load`` or ``weights_only=False``.
"""

import hashlib
import os
import warnings

import numpy as np

from segjax.errors import UserError

SAFETENSORS = (".safetensors",)
PICKLES = (".pth", ".pt", ".bin", ".ckpt")
# Where training scripts commonly nest the state dict inside a saved checkpoint dict.
_NESTED = ("state_dict", "model", "model_state_dict", "module")

CONVERT_HINT = (
    'convert it where torch is installed: python -c "import torch, safetensors.torch as st; '
    "st.save_file({k: v.contiguous() for k, v in torch.load('IN', weights_only=True).items()}, "
    "'OUT.safetensors')\""
)


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
        import torch
    except ImportError:
        raise WeightsFileError(
            f"{path}: a PyTorch pickle, which segjax reads only through torch.load("
            f"weights_only=True) and torch is not installed; {CONVERT_HINT}"
        ) from None
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol: the error says it all
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types; all mean "refused"
        raise WeightsFileError(
            f"{path}: refused by torch.load(weights_only=True): {_reason(error)} (segjax never "
            "unpickles code; if you trust the file, convert it to safetensors yourself)"
        ) from None
    for key in _NESTED:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise WeightsFileError(f"{path}: holds no state dict (a mapping of names to tensors)")
    # NumPy has no bfloat16: such tensors are widened to float32.
    return {
        key: (value.float() if value.dtype == torch.bfloat16 else value).detach().numpy()
        for key, value in loaded.items()
    }


def _reason(error: Exception) -> str:
    """The line of torch's multi-line refusal that says what was refused."""
    text = " ".join(str(error).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        return text.split(marker, 1)[1].split(" Check the documentation")[0].strip()
    return text[:300] or type(error).__name__


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Writes atomically: a crash leaves the old file or none, never half of one."""
    from safetensors.numpy import save_file

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(
            {key: np.ascontiguousarray(value) for key, value in tensors.items()},
            temporary,
            metadata=metadata,
        )
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
