"""Joint image + mask augmentation and normalisation: pure functions of (arrays, rng).

Images are resampled bilinearly, masks always with nearest neighbour. Scale-and-crop is one affine
warp: a window of ``size / scale`` source pixels at a random position is resampled to ``size``;
where the window leaves the image, the image is filled with its mean colour and the pixels are
marked invalid (they count in no loss and no metric).

Every random draw is a ``draw_*`` function, so that the host pipeline and the device-side
augmentation (``cut_window`` here, ``segjax.data.device_augment`` there) draw the same numbers
in the same order from an example's generator and so augment it alike.
"""

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _warp(array: np.ndarray, size, coefficients, resample, fill) -> np.ndarray:
    out = _pil(array).transform(
        (size[1], size[0]), Image.Transform.AFFINE, coefficients, resample=resample, fillcolor=fill
    )
    return np.asarray(out).reshape(size[0], size[1], -1)


def draw_window(
    height: int,
    width: int,
    size: Sequence[int],
    scale_range: Sequence[float],
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """(scale, y0, x0): a log-uniform zoom and the top-left corner, in source pixels, of the
    ``size / scale`` window it samples (anywhere the window overlaps the image most)."""
    low, high = scale_range
    scale = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    win_h, win_w = size[0] / scale, size[1] / scale
    y0 = rng.uniform(min(0.0, height - win_h), max(0.0, height - win_h))
    x0 = rng.uniform(min(0.0, width - win_w), max(0.0, width - win_w))
    return scale, float(y0), float(x0)


def window_shape(size: Sequence[int], scale_range: Sequence[float]) -> tuple[int, int]:
    """The source rows and columns that a warp to ``size`` can read at the smallest scale:
    (size - 1) / scale between the first and last sample, and one more pixel on each side
    for bilinear interpolation and the float rounding of its corner."""
    return tuple(math.ceil((n - 1) / scale_range[0]) + 3 for n in size)


def cut_window(
    image: np.ndarray,
    mask: np.ndarray,
    size: Sequence[int],
    scale_range: Sequence[float],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """What ``random_scale_crop`` would read, as fixed-shape arrays for a warp on the device:
    the source pixels of the drawn window (``window_shape``; zeros beyond the image), where the
    image lies in it, the warp's origin and step in its coordinates, and the fill colour. The
    same draws as ``random_scale_crop``; no per-pixel work but a copy."""
    height, width = image.shape[:2]
    scale, y0, x0 = draw_window(height, width, size, scale_range, rng)
    rows, cols = window_shape(size, scale_range)
    # The first source pixel the bilinear warp reads (its sample at output pixel 0, -0.5).
    top = math.floor(y0 + 0.5 / scale - 0.5)
    left = math.floor(x0 + 0.5 / scale - 0.5)
    window = np.zeros((rows, cols, image.shape[-1]), np.uint8)
    window_mask = np.zeros((rows, cols), np.uint8)
    y_from, y_to = max(top, 0), min(top + rows, height)
    x_from, x_to = max(left, 0), min(left + cols, width)
    if y_from < y_to and x_from < x_to:
        inside = (slice(y_from - top, y_to - top), slice(x_from - left, x_to - left))
        window[inside] = image[y_from:y_to, x_from:x_to]
        window_mask[inside] = mask[y_from:y_to, x_from:x_to]
    return {
        "window_image": window,
        "window_mask": window_mask,
        # The image's rows [bounds[0], bounds[2]) and columns [bounds[1], bounds[3]), in window
        # coordinates (they may reach beyond the window).
        "window_bounds": np.asarray([-top, -left, height - top, width - left], np.int32),
        "window_origin": np.asarray([y0 - top, x0 - left], np.float32),
        "window_step": np.float32(1.0 / scale),
        "fill": np.asarray(_fill_colour(image), np.float32),
    }


def _fill_colour(image: np.ndarray) -> tuple[int, ...]:
    """The colour outside the image: its mean, truncated to integers as Pillow takes it. (Each
    channel's exact integer sum over the count: the float64 mean's value, 7x faster than a
    reduction over the pixel axis.)"""
    count = image.shape[0] * image.shape[1]
    return tuple(
        int(int(image[..., c].sum(dtype=np.int64)) / count) for c in range(image.shape[-1])
    )


def random_scale_crop(
    image: np.ndarray,
    mask: np.ndarray,
    size: Sequence[int],
    scale_range: Sequence[float],
    rng: np.random.Generator,
    labels: Sequence[np.ndarray] = (),
):
    """(image, mask, valid, *labels) of ``size``: a random window, zoomed by a log-uniform scale.
    ``labels`` (H, W) integer maps (instance ids) take the mask's nearest-neighbour warp, 0
    outside the image; they draw nothing from ``rng``."""
    height, width = image.shape[:2]
    scale, y0, x0 = draw_window(height, width, size, scale_range, rng)
    coefficients = (1 / scale, 0.0, x0, 0.0, 1 / scale, y0)
    fill = _fill_colour(image)
    image = _warp(
        image, size, coefficients, Image.Resampling.BILINEAR, fill if len(fill) > 1 else fill[0]
    )
    mask = _warp(mask[..., None], size, coefficients, Image.Resampling.NEAREST, 0)[..., 0]
    valid = _warp(
        np.ones((height, width, 1), np.uint8), size, coefficients, Image.Resampling.NEAREST, 0
    )[..., 0].astype(bool)
    warped = [
        _warp(label.astype(np.int32)[..., None], size, coefficients, Image.Resampling.NEAREST, 0)[
            ..., 0
        ]
        for label in labels
    ]
    return (image, mask, valid, *warped)


def resize(image: np.ndarray, mask: np.ndarray, size: Sequence[int]):
    """Resizes to ``size`` (height, width): bilinear for the image, nearest for the mask."""
    out_image = np.asarray(_pil(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    out_mask = np.asarray(
        _pil(mask[..., None]).resize((size[1], size[0]), Image.Resampling.NEAREST)
    )
    return out_image.reshape(size[0], size[1], -1), out_mask


def resize_whole(
    image: np.ndarray, mask: np.ndarray, size: Sequence[int], labels: Sequence[np.ndarray] = ()
):
    """(image, mask, valid, *labels): the whole image resized to ``size``, the training view
    of protocols that train on resized whole images (pytorch-nested-unet) rather than crops; the
    same resampling as ``resize``, which evaluation at ``data.eval_size`` uses."""
    image, mask = resize(image, mask, size)
    resized = [
        np.asarray(
            Image.fromarray(label.astype(np.int32)).resize(
                (size[1], size[0]), Image.Resampling.NEAREST
            )
        )
        for label in labels
    ]
    return (image, mask, np.ones(mask.shape, bool), *resized)


def draw_flips(
    rng: np.random.Generator, hflip: bool, vflip: bool, rot90: bool, square: bool
) -> tuple[int, int, int]:
    """(horizontal flip, vertical flip, quarter turns): each flip with probability 1/2 where
    enabled, 0-3 turns where enabled and the output is square."""
    h = int(hflip and rng.random() < 0.5)
    v = int(vflip and rng.random() < 0.5)
    k = int(rng.integers(4)) if rot90 and square else 0
    return h, v, k


def flip_and_rotate(
    arrays: list[np.ndarray], rng: np.random.Generator, hflip: bool, vflip: bool, rot90: bool
) -> list[np.ndarray]:
    """The same random flips (and quarter turns, for square outputs) applied to every array."""
    square = arrays[0].shape[0] == arrays[0].shape[1]
    h, v, k = draw_flips(rng, hflip, vflip, rot90, square)
    if h:
        arrays = [a[:, ::-1] for a in arrays]
    if v:
        arrays = [a[::-1] for a in arrays]
    if k:
        arrays = [np.rot90(a, k) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def draw_jitter(strength: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """(brightness, contrast, saturation) factors in [1 - strength, 1 + strength]; no draw and
    all 1 when ``strength`` is 0."""
    if strength <= 0:
        return 1.0, 1.0, 1.0
    return tuple(rng.uniform(1 - strength, 1 + strength, 3))  # float64, as the host warp uses


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and (for RGB) saturation in [1 - strength, 1 + strength]."""
    x = image.astype(np.float32)
    if strength <= 0:
        return x
    brightness, contrast, saturation = draw_jitter(strength, rng)
    x = x * brightness
    x = (x - x.mean()) * contrast + x.mean()
    if x.shape[-1] == 3:
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = grey[..., None] + (x - grey[..., None]) * saturation
    return np.clip(x, 0, 255)


def statistics(
    channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std images are normalised with: the given ones, else ImageNet
    statistics (their average, repeated, for images that are not RGB)."""
    if not mean:
        mean = IMAGENET_MEAN if channels == 3 else (float(np.mean(IMAGENET_MEAN)),) * channels
    if not std:
        std = IMAGENET_STD if channels == 3 else (float(np.mean(IMAGENET_STD)),) * channels
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def normalize(
    image: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None
) -> np.ndarray:
    """(image / 255 - mean) / std per channel (``statistics``: ImageNet's by default)."""
    mean, std = statistics(image.shape[-1], mean, std)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((image.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
