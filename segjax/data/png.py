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
