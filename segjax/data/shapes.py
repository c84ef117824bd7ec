"""``segjax_shapes``: a procedurally generated multi-class segmentation dataset, built offline.

Each image has a dark, textured, noisy background and up to 6 overlapping shapes (ellipse,
rectangle, triangle) of varied scale, rotation, colour and texture, each at least
``MIN_CONTRAST`` brighter than the background in every channel; the mask holds the class of the
topmost shape at each pixel, and the instance map (``instances``, PNG bytes) which shape it is
(1, 2, ...). The label is readable from the pixels: each shape stays at least
``MIN_VISIBLE`` in view, and shapes that overlap differ in colour. Every example is a function
of (seed, split, index) alone, so two builds with one seed are identical, whatever the machine.

    import segjax.data.sources, tensorflow_datasets as tfds
    builder = tfds.builder("segjax_shapes/small", file_format="array_record")
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from segjax.data.png import encode_label_map, encode_png

CLASS_NAMES = ("background", "ellipse", "rectangle", "triangle")
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
MIN_CONTRAST = 60.0  # how much brighter than the background each channel of a shape is
MIN_VISIBLE = 0.6  # the least fraction of each shape that stays in view (in the image, not hidden)


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    image_size: int = 128
    num_train: int = 2000
    num_validation: int = 200
    num_test: int = 200
    seed: int = 0


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A random texture in [-1, 1]: stripes, a checkerboard, a smooth gradient or blotches."""
    kind = rng.integers(4)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    if kind == 0:
        return np.sin(u * rng.uniform(0.3, 1.2))
    if kind == 1:
        period = rng.uniform(3, 10)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        return np.where((np.floor(u / period) + np.floor(v / period)) % 2 == 0, 1.0, -1.0)
    if kind == 2:
        return np.clip(u / (np.abs(u).max() + 1e-6), -1, 1)
    coarse = rng.uniform(-1, 1, (5, 5))
    rows = np.clip((yy / yy.max() * 4).astype(int), 0, 4)
    cols = np.clip((xx / xx.max() * 4).astype(int), 0, 4)
    return coarse[rows, cols]


def _shape_mask(rng, kind, yy, xx, cy, cx, radius):
    angle = rng.uniform(0, 2 * np.pi)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    if kind == 1:  # ellipse, aspect 0.6-1
        b = radius * rng.uniform(0.6, 1.0)
        return (u / radius) ** 2 + (v / b) ** 2 <= 1.0
    if kind == 2:  # rectangle, aspect 0.5-1
        b = radius * rng.uniform(0.5, 1.0)
        return (np.abs(u) <= radius * 0.85) & (np.abs(v) <= b * 0.85)
    # triangle: three vertices at 120 degrees (jittered) around the centre
    angles = np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.2, 0.2, 3)
    px, py = radius * np.cos(angles), radius * np.sin(angles)
    inside = np.ones_like(u, dtype=bool)
    for i in range(3):
        j = (i + 1) % 3
        inside &= (px[j] - px[i]) * (v - py[i]) - (py[j] - py[i]) * (u - px[i]) >= 0
    return inside


def _place_shape(rng, size, shapes, areas, colours, base):
    """A shape whose label can be read from the pixels: at least ``MIN_VISIBLE`` of it inside the
    image, hiding at most ``1 - MIN_VISIBLE`` of any shape already drawn, in a colour that differs
    by ``MIN_CONTRAST`` from the background and from each shape it overlaps. None if 20 tries fail.
    """
    margin = size // 2  # the shape is drawn on a larger canvas to see how much of it is outside
    big_yy, big_xx = np.mgrid[-margin : size + margin, -margin : size + margin].astype(np.float32)
    for _ in range(20):
        kind = int(rng.integers(1, len(CLASS_NAMES)))
        radius = size * rng.uniform(0.1, 0.3)
        cy, cx = rng.uniform(0, size, 2)
        whole = _shape_mask(rng, kind, big_yy, big_xx, cy, cx, radius)
        inside = whole[margin : margin + size, margin : margin + size]
        if inside.sum() < MIN_VISIBLE * whole.sum():
            continue
        covered = np.bincount(shapes[inside], minlength=len(areas) + 1)[1:]
        visible = np.bincount(shapes.ravel(), minlength=len(areas) + 1)[1:] - covered
        if np.any(visible < MIN_VISIBLE * np.asarray(areas, np.int64)):
            continue
        below = [colours[i] for i in np.flatnonzero(covered)]
        colour = np.clip(base + MIN_CONTRAST + rng.uniform(0, 120, 3), 0, 255)
        if all(np.abs(colour - c).max() >= MIN_CONTRAST for c in below):
            return kind, inside, colour
    return None


def generate_example(
    seed: int, split: str, index: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (image uint8 (size, size, 3), mask uint8 (size, size), instances int32 (size, size))
    example; instance ids are 1, 2, ... in drawing order (0: background)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(15, 95, 3)  # a dark, textured background
    image = base + 20 * _texture(rng, yy, xx)[..., None] * rng.uniform(0.3, 1.0, 3)
    mask = np.zeros((size, size), np.uint8)
    shapes = np.zeros((size, size), np.int32)  # which shape (1, 2, ...) is on top at each pixel
    areas, colours = [], []  # of each shape drawn, its whole area in the image and its colour
    for _ in range(rng.integers(2, 7)):
        placed = _place_shape(rng, size, shapes, areas, colours, base)
        if placed is None:
            continue
        kind, inside, colour = placed
        areas.append(int(inside.sum()))
        colours.append(colour)
        fill = colour + 25 * _texture(rng, yy, xx)[..., None] * rng.uniform(0.3, 1.0, 3)
        image = np.where(inside[..., None], fill, image)
        mask[inside] = kind
        shapes[inside] = len(colours)
    image += rng.normal(0, rng.uniform(2, 10), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask, relabel_instances(shapes)


def relabel_instances(shapes: np.ndarray) -> np.ndarray:
    """Instance ids 1..N of the shapes still in view (a shape can be hidden entirely)."""
    ids, inverse = np.unique(shapes, return_inverse=True)
    offset = 1 if ids[0] == 0 else 0
    new = np.arange(len(ids)) + 1 - offset
    return np.where(shapes > 0, new[inverse.reshape(shapes.shape)], 0).astype(np.int32)


class SegjaxShapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic shapes: background plus ellipses, rectangles and triangles."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "Shapes brighter than a dark background; softer textures and noise.",
        "1.2.0": "Every label readable from the pixels: shapes mostly in view, and overlapping "
        "shapes in distinct colours.",
        "1.3.0": "Instance label maps (same images and masks).",
    }
    BUILDER_CONFIGS = [
        ShapesConfig(name="default", description="2000/200/200 images of 128x128"),
        ShapesConfig(
            name="small",
            description="96/20/23 images of 64x64, for tests",
            image_size=64,
            num_train=96,
            num_validation=20,
            num_test=23,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "mask": tfds.features.Image(shape=(None, None, 1)),
                    "instances": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "name": tfds.features.Text(),
                }
            ),
            metadata=tfds.core.MetadataDict(
                class_names=list(CLASS_NAMES), ignore_label=None, has_instances=True
            ),
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, count: int):
        c = self.builder_config
        for index in range(count):
            image, mask, instances = generate_example(c.seed, split, index, c.image_size)
            name = f"{split}_{index:05d}"
            yield (
                name,
                {
                    "image": encode_png(image),
                    "mask": encode_png(mask[..., None]),
                    "instances": encode_label_map(instances),
                    "name": name,
                },
            )
