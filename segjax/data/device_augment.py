"""The training augmentation's per-pixel work on the device, inside the jitted train step.

With ``data.augment.on_device`` the host pipeline draws every random number as it always does
(the same draws, from the same per-example generator: ``segjax.data.augment``'s ``draw_*``) and
only cuts out the source window the warp will read (``augment.cut_window``: a copy, no per-pixel
arithmetic). ``augment_batch`` then does what the host would have done, for the whole batch at
once: the bilinear scale-and-crop warp (nearest for the mask), the flips and quarter turns, the
colour jitter and the normalisation. Batches, resumption and the processes' disjoint examples
are the pipeline's, so they stay exactly what they were; the result equals the host's up to
float rounding (Pillow computes the warp in double precision).

Each output pixel is mapped back through the turns and flips to a point of the warp's output,
and from there to the window, so one gather per corner does the whole geometry.
"""

import jax
import jax.numpy as jnp

from segjax.data import augment

# The keys of a raw training batch (``augment.cut_window``, plus the drawn flips and jitter).
RAW_KEYS = (
    "window_image",
    "window_mask",
    "window_bounds",
    "window_origin",
    "window_step",
    "fill",
    "flips",
    "jitter",
)


def is_raw(batch: dict) -> bool:
    """Whether ``batch`` still needs ``augment_batch`` (the pipeline ran with on_device)."""
    return "window_image" in batch


def _source_points(flips: jax.Array, size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """(rows, cols) of the warp's output that each output pixel shows after ``flips``
    (horizontal flip, vertical flip, quarter turns, as ``augment.flip_and_rotate`` applies
    them: flips first, then ``np.rot90`` k times)."""
    height, width = size
    i, j = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    n = height - 1  # quarter turns only happen for square outputs
    turns = flips[2]
    # np.rot90(a, k)[i, j] == a[f_k(i, j)].
    i, j = (
        jnp.select([turns == 1, turns == 2, turns == 3], [j, n - i, n - j], i),
        jnp.select([turns == 1, turns == 2, turns == 3], [n - i, n - j, i], j),
    )
    i = jnp.where(flips[1] == 1, height - 1 - i, i)
    j = jnp.where(flips[0] == 1, width - 1 - j, j)
    return i, j


def _warp_one(example: dict, size: tuple[int, int], ignore_label: int | None) -> dict:
    window, window_mask = example["window_image"], example["window_mask"]
    rows, cols = window_mask.shape
    top, left, bottom, right = (example["window_bounds"][k] for k in range(4))
    out_i, out_j = _source_points(example["flips"], size)
    step = example["window_step"]
    # Pillow's affine transform samples output pixel (i, j) at source (y0, x0) + (i, j + 0.5)
    # / scale; the point counts only inside the image.
    y = example["window_origin"][0] + (out_i.astype(jnp.float32) + 0.5) * step
    x = example["window_origin"][1] + (out_j.astype(jnp.float32) + 0.5) * step
    inside = (y >= top) & (y < bottom) & (x >= left) & (x < right)
    # Neighbours are clamped to the image (as Pillow's bilinear filter does) and the window.
    row_low, row_high = jnp.maximum(top, 0), jnp.minimum(bottom, rows) - 1
    col_low, col_high = jnp.maximum(left, 0), jnp.minimum(right, cols) - 1

    def rows_at(v):
        return jnp.clip(v, row_low, row_high)

    def cols_at(v):
        return jnp.clip(v, col_low, col_high)

    mask = window_mask[
        rows_at(jnp.floor(y).astype(jnp.int32)), cols_at(jnp.floor(x).astype(jnp.int32))
    ]
    y, x = y - 0.5, x - 0.5
    y0, x0 = jnp.floor(y), jnp.floor(x)
    dy, dx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    ya, yb, xa, xb = rows_at(y0), rows_at(y0 + 1), cols_at(x0), cols_at(x0 + 1)
    rgba = window.shape[-1] == 4
    pixels = (_premultiplied(window) if rgba else window).astype(jnp.float32)
    upper = pixels[ya, xa] + (pixels[ya, xb] - pixels[ya, xa]) * dx
    lower = pixels[yb, xa] + (pixels[yb, xb] - pixels[yb, xa]) * dx
    image = jnp.floor(upper + (lower - upper) * dy)  # Pillow truncates to uint8
    image = jnp.where(inside[..., None], image, example["fill"])
    if rgba:
        image = _unpremultiplied(image.astype(jnp.int32)).astype(jnp.float32)
    valid = inside
    if ignore_label is not None:
        valid = valid & (mask != ignore_label)
    label = jnp.where(valid, mask.astype(jnp.int32), 0)
    return {"image": image, "label": label, "valid": valid}


def _premultiplied(rgba: jax.Array) -> jax.Array:
    """Pillow's RGBA -> RGBa: colour times alpha / 255, rounded as its MULDIV255 does. Pillow
    warps RGBA images premultiplied (``Image.transform``), so the device does too."""
    x = rgba.astype(jnp.int32)
    t = x[..., :3] * x[..., 3:] + 128
    return jnp.concatenate([((t >> 8) + t) >> 8, x[..., 3:]], axis=-1)


def _unpremultiplied(rgba: jax.Array) -> jax.Array:
    """Pillow's RGBa -> RGBA: colour times 255 / alpha (integer division, clipped), kept where
    alpha is 0 or 255."""
    alpha = rgba[..., 3:]
    divided = jnp.minimum(255 * rgba[..., :3] // jnp.maximum(alpha, 1), 255)
    colour = jnp.where((alpha == 0) | (alpha == 255), rgba[..., :3], divided)
    return jnp.concatenate([colour, alpha], axis=-1)


def _jitter(image: jax.Array, factors: jax.Array) -> jax.Array:
    """``augment.color_jitter`` with drawn factors (all 1: the image unchanged)."""
    brightness, contrast, saturation = factors[0], factors[1], factors[2]
    x = image * brightness
    mean = x.mean()
    x = (x - mean) * contrast + mean
    if x.shape[-1] == 3:
        grey = (x @ jnp.asarray([0.299, 0.587, 0.114], jnp.float32))[..., None]
        x = grey + (x - grey) * saturation
    return jnp.clip(x, 0, 255)


def augment_batch(batch: dict, preprocess) -> dict:
    """A raw batch (``is_raw``) as the model's batch: ``image`` float32 normalised, ``label``,
    ``valid`` and ``index``, what ``preprocess.train`` gives on the host. ``preprocess`` is
    the pipeline's ``Preprocess`` (sizes, jitter, normalisation, ignore label)."""
    size = tuple(preprocess.image_size)
    raw = {key: batch[key] for key in RAW_KEYS}
    warped = jax.vmap(lambda example: _warp_one(example, size, preprocess.ignore_label))(raw)
    image = warped["image"]
    if preprocess.color_jitter > 0:
        image = jax.vmap(_jitter)(image, batch["jitter"].astype(jnp.float32))
    mean, std = augment.statistics(image.shape[-1], preprocess.mean, preprocess.std)
    image = (image / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return {
        "image": image,
        "label": warped["label"],
        "valid": warped["valid"],
        "index": batch["index"],
    }
