"""Prediction of images larger than a tile: overlapping tiles blended with a smooth window.

Each tile's probabilities are weighted by a window that is 1 in the tile's middle and falls off
as a raised cosine over the ``overlap`` pixels next to each edge that another tile also covers (an
edge on the image border keeps weight 1), then the weighted sum is divided by the summed weights.
Every pixel is covered by at least one tile with a positive weight, so the blend is a convex
combination of the tiles' predictions: no seams, and a model whose prediction at a pixel does not
depend on its surroundings gives exactly its whole-image output.
"""

from collections.abc import Callable, Iterator

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along one axis: every ``tile - overlap`` pixels, the last flush with the end.
    One tile at 0 when the image is not longer than a tile."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap={overlap} must be in [0, tile={tile})")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return [*starts, length - tile]


def ramp(length: int, overlap: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    """1-D weights: a raised cosine over ``overlap`` pixels at each faded end, 1 elsewhere."""
    weights = np.ones(length, np.float32)
    if overlap:
        rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        if fade_start:
            weights[:overlap] = np.minimum(weights[:overlap], rise)
        if fade_end:
            weights[length - overlap :] = np.minimum(weights[length - overlap :], rise[::-1])
    return weights


def tiles(
    height: int, width: int, tile: int, overlap: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(top, left, window) of every tile of an image; the window is (tile_h, tile_w)."""
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    for i, top in enumerate(rows):
        vertical = ramp(tile_h, overlap, i > 0, i < len(rows) - 1)
        for j, left in enumerate(cols):
            horizontal = ramp(tile_w, overlap, j > 0, j < len(cols) - 1)
            yield top, left, np.outer(vertical, horizontal)


def predict_tiled(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int,
    overlap: int,
    batch: int = 1,
) -> np.ndarray:
    """(H, W, C) blended probabilities of ``image`` (H, W, channels); ``predict`` maps a batch of
    tiles (B, tile_h, tile_w, channels) to probabilities (B, tile_h, tile_w, C). All tiles of an
    image have one shape, so a jitted ``predict`` compiles once per image size class."""
    height, width = image.shape[:2]
    total, weights = None, np.zeros((height, width, 1), np.float32)
    pending: list[tuple[int, int, np.ndarray]] = []

    def flush():
        nonlocal total
        crops = np.stack(
            [image[top : top + w.shape[0], left : left + w.shape[1]] for top, left, w in pending]
        )
        probabilities = np.asarray(predict(crops), np.float32)
        if total is None:
            total = np.zeros((height, width, probabilities.shape[-1]), np.float32)
        for (top, left, window), probs in zip(pending, probabilities, strict=True):
            rows, cols = slice(top, top + window.shape[0]), slice(left, left + window.shape[1])
            total[rows, cols] += probs * window[..., None]
            weights[rows, cols] += window[..., None]
        pending.clear()

    for entry in tiles(height, width, tile, overlap):
        pending.append(entry)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return total / weights
