"""Image files: finding them (``find_inputs``) and reading images, masks and instance maps as
the folder dataset, ``segjax.predict``, ``segjax.score`` and ``segjax.export`` need them. Pillow
and NumPy only: no JAX, TFDS or grain, so exported-model prediction can use it.
"""

import glob
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segjax.data.errors import DataError
from segjax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


EXIF_ORIENTATION = 0x0112


def upright(image: Image.Image) -> Image.Image:
    """The image as viewers show it: turned and flipped as its EXIF orientation says (cameras
    and phones store pixels as the sensor read them and record the turn in that tag), so that
    a mask predicted from it, or drawn on it in a viewer, lies over what the user sees."""
    if image.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return image
    return ImageOps.exif_transpose(image)


def load_image(path: str, channels: int) -> np.ndarray:
    """An image file as uint8 (H, W, channels), upright (``upright``), converted to greyscale,
    RGB or RGBA by Pillow (greyscale is repeated, alpha dropped or made opaque as needed)."""
    if channels not in CHANNEL_MODES:
        raise DataError(f"channels={channels!r}: choose one of {list(CHANNEL_MODES)}")
    try:
        with Image.open(path) as image:
            image.load()
            image = upright(image)
            if image.mode in ("I;16", "I;16B", "I", "F"):
                array = np.asarray(image, np.float64)
                span = max(float(array.max() - array.min()), 1e-6)
                image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8))
            image = image.convert(CHANNEL_MODES[channels])
            return np.asarray(image, np.uint8).reshape(image.height, image.width, channels)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read image ({error})") from None


def load_mask(path: str, ignore_label: int | None) -> np.ndarray:
    """A mask file as uint8 (H, W) class ids; 0/255 binary masks become 0/1."""
    try:
        with Image.open(path) as image:
            image.load()
            image = upright(image)  # as its image is read
            if image.mode not in ("L", "P", "1", "I", "I;16"):
                raise DataError(
                    f"{path}: a mask must be single-channel class ids (PNG mode L, "
                    f"P or I), got mode {image.mode}"
                )
            mask = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read mask ({error})") from None
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.max(initial=0) > 255:
        raise DataError(f"{path}: mask values up to {mask.max()} exceed 255")
    mask = mask.astype(np.uint8)
    if ignore_label != 255 and np.isin(mask, (0, 255)).all():
        mask = (mask // 255).astype(np.uint8)
    return mask


def load_instances(path: str) -> np.ndarray:
    """An instance label map file as int32 (H, W): single channel, 8 or 16 bits."""
    try:
        with Image.open(path) as image:
            image.load()
            image = upright(image)
            if image.mode not in ("L", "P", "I", "I;16", "I;16B"):
                raise DataError(
                    f"{path}: an instance map must be a single-channel 8- or 16-bit PNG of "
                    f"object ids, got mode {image.mode}"
                )
            labels = np.asarray(image).astype(np.int64)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read instance map ({error})") from None
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise DataError(f"{path}: object ids {labels.min()}..{labels.max()} are outside 0..65535")
    return labels.astype(np.int32)


def check_mask_values(
    where: str, mask: np.ndarray, num_classes: int, ignore_label: int | None
) -> None:
    """A ``DataError`` naming ``where`` (a file, an example) if ``mask`` holds a value that is
    neither a class id below ``num_classes`` nor the ignore label."""
    if mask.size == 0 or int(mask.max()) < num_classes:  # the usual case, without a sort
        return
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= num_classes and v != ignore_label]
    if bad:
        raise DataError(
            f"{where}: mask values {bad[:10]} are outside 0..{num_classes - 1} "
            f"(ignore label: {ignore_label})"
        )


def find_inputs(pattern: str) -> list[str]:
    """The image files ``--input`` names, sorted; a one-line error if there are none."""
    if os.path.isdir(pattern):
        paths = [
            os.path.join(pattern, name)
            for name in os.listdir(pattern)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
        ]
    elif os.path.isfile(pattern):
        paths = [pattern]
    else:
        paths = [p for p in glob.glob(pattern) if os.path.isfile(p)]
    if not paths:
        raise UserError(
            f"--input={pattern!r}: no image files (a file, a directory of "
            f"{', '.join(IMAGE_SUFFIXES)} files, or a quoted glob)"
        )
    paths.sort()
    stems: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise UserError(f"--input: {stems[stem]} and {path} would both write {stem}.png")
        stems[stem] = path
    return paths
