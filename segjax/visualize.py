"""Pictures of images, masks and predictions, for people to look at."""

import numpy as np

from segjax.data.augment import statistics

PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    np.uint8,
)


def colourise(label: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Class ids as colours (a fixed palette, then hashed colours); invalid pixels grey."""
    extra = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)
    palette = np.concatenate([PALETTE, extra[len(PALETTE) :]])
    out = palette[np.asarray(label) % 256]
    if valid is not None:
        out[~np.asarray(valid)] = 128
    return out


def denormalise(image: np.ndarray, mean=None, std=None) -> np.ndarray:
    """A normalised float image back to uint8 RGB (greyscale repeated)."""
    channels = image.shape[-1]
    mean, std = (np.asarray(v) for v in statistics(channels, mean, std))
    out = np.clip((image * std + mean) * 255, 0, 255).astype(np.uint8)
    return np.repeat(out, 3, axis=-1) if channels == 1 else out[..., :3]


def side_by_side(panels: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """RGB panels of one height, left to right, separated by white gaps."""
    height = panels[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts = []
    for panel in panels:
        parts += [panel, spacer]
    return np.concatenate(parts[:-1], axis=1)


def instance_colours(labels: np.ndarray) -> np.ndarray:
    """Object ids as distinct hashed colours, background black."""
    rng = np.random.default_rng(1)
    palette = rng.integers(64, 256, (4096, 3), dtype=np.uint8)
    out = palette[np.asarray(labels) % 4096]
    out[np.asarray(labels) == 0] = 0
    return out


def instance_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with each object tinted in its colour and outlined."""
    labels = np.asarray(labels)
    colours = instance_colours(labels).astype(np.float32)
    out = image.astype(np.float32)
    inside = labels > 0
    out[inside] = (1 - alpha) * out[inside] + alpha * colours[inside]
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    edge &= inside
    out[edge] = colours[edge]
    return np.clip(out, 0, 255).astype(np.uint8)
