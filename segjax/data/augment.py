"""Joint image + mask augmentation and normalisation: pure functions of (arrays, rng).

Images are resampled bilinearly, masks always with nearest neighbour. Scale-and-crop is one affine
warp: a window of ``size / scale`` source pixels at a random position is resampled to ``size``;
where the window leaves the image, the image is filled with its mean colour and the pixels are
marked invalid (they count in no loss and no metric).
"""

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
    low, high = scale_range
    scale = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    win_h, win_w = size[0] / scale, size[1] / scale
    y0 = rng.uniform(min(0.0, height - win_h), max(0.0, height - win_h))
    x0 = rng.uniform(min(0.0, width - win_w), max(0.0, width - win_w))
    coefficients = (1 / scale, 0.0, x0, 0.0, 1 / scale, y0)
    fill = tuple(int(v) for v in image.reshape(-1, image.shape[-1]).mean(0))
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


def flip_and_rotate(
    arrays: list[np.ndarray], rng: np.random.Generator, hflip: bool, vflip: bool, rot90: bool
) -> list[np.ndarray]:
    """The same random flips (and quarter turns, for square outputs) applied to every array."""
    if hflip and rng.random() < 0.5:
        arrays = [a[:, ::-1] for a in arrays]
    if vflip and rng.random() < 0.5:
        arrays = [a[::-1] for a in arrays]
    if rot90 and arrays[0].shape[0] == arrays[0].shape[1]:
        k = int(rng.integers(4))
        arrays = [np.rot90(a, k) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and (for RGB) saturation in [1 - strength, 1 + strength]."""
    x = image.astype(np.float32)
    if strength <= 0:
        return x
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, 3)
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
