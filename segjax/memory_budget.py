"""Whether a whole-image forward pass fits in memory, and the tile size that does.

A convolutional network's activations grow with the image's pixels, so the bytes one pass needs
are estimated from the compiled program at a reference size (XLA's own account of its buffers,
``inference.load_predictor``) times the image's pixels, with a margin for what the reference
size hides. Above the budget (half of the memory available: the device's free memory on an
accelerator, the host's on a CPU; or ``--memory_limit``) predict goes by tiles of the largest
size that fits, and says so, rather than letting XLA abort the process.
"""

import math
import os

MARGIN = 1.5  # the estimate's safety factor: buffers that do not scale with the image, fusion
SMALLEST_TILE = 128


def available_bytes() -> int:
    """The memory a forward pass may take: the first device's free memory where JAX reports it
    (GPU, TPU), else the host's available memory (``MemAvailable``)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def needed_bytes(bytes_per_pixel: float, height: int, width: int) -> int:
    return int(MARGIN * bytes_per_pixel * height * width)


def automatic_tile(
    bytes_per_pixel: float, height: int, width: int, budget: int, multiple: int
) -> int:
    """0 where the whole image fits ``budget``, else the largest tile (a multiple of
    ``multiple``, at least ``SMALLEST_TILE``) whose pass fits; raises ValueError where even
    that does not."""
    if needed_bytes(bytes_per_pixel, height, width) <= budget:
        return 0
    side = math.isqrt(max(int(budget / (MARGIN * bytes_per_pixel)), 0))
    tile = side - side % max(multiple, 1)
    if tile < SMALLEST_TILE:
        raise ValueError(
            f"even tiles of {SMALLEST_TILE} pixels need "
            f"{gib(needed_bytes(bytes_per_pixel, SMALLEST_TILE, SMALLEST_TILE))}, more than "
            f"the {gib(budget)} allowed"
        )
    return tile


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"
