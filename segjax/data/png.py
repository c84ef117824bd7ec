"""PNG encoding with Pillow, so that TFDS datasets are built without TensorFlow."""

import io

import numpy as np
from PIL import Image


def encode_png(array: np.ndarray) -> io.BytesIO:
    """An (H, W, C) uint8 array as a PNG file object, the form TFDS's Image feature stores as is."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    buffer.seek(0)
    return buffer


def encode_label_map(labels: np.ndarray) -> bytes:
    """An instance label map (H, W) as PNG bytes: 8-bit if its ids fit, else 16-bit."""
    if labels.max(initial=0) > 65535 or labels.min(initial=0) < 0:
        raise ValueError(f"instance ids must be in 0..65535, got {labels.min()}..{labels.max()}")
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    return encode_png(labels.astype(dtype)).getvalue()


def decode_label_map(data: bytes) -> np.ndarray:
    """The (H, W) int32 label map of ``encode_label_map``'s bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).astype(np.int32)
