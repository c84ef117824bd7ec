"""Instance segmentation of a split, on the host: label maps from a model's outputs, and their
metrics against the dataset's instance maps.

Two kinds of model make instances: Mask R-CNN (its detections pasted into a label map,
``segjax.detection.label_maps.paste_masks``) and, as the baseline without detection, a semantic
model whose foreground is split into objects by connected components or a seeded watershed
(``semantic_instances``; an object's score is its mean foreground probability). Both are scored
at the resolution evaluated (full size unless ``data.eval_size``) with COCO mask AP / AP50 /
AP75 (pycocotools) over all their objects, ranked by score, and with the DSB 2018 metric (mean
over images) over the objects scoring at least ``SCORE_THRESHOLD``: AP rewards a long tail of
unlikely detections, which the DSB metric counts as false positives (``dsb_score_all`` is the
DSB metric over every object). Detections are pasted best first, so dropping the low scores
leaves the others' pixels as they are.

The jitted functions return their outputs replicated, with the global batch's example indices,
so every process holds every row and computes the same metrics.
"""

import dataclasses
import functools
import time
from collections.abc import Iterator

import jax
import numpy as np

from segjax.data.augment import resize
from segjax.detection import instance_metrics as im
from segjax.detection.label_maps import (
    SCORE_THRESHOLD,
    SPLITTERS,
    Splitter,
    confident_labels,
    label_map,
)
from segjax.models import is_instance_model
from segjax.runs import eval_batches
from segjax.steps import detect_step, foreground_step
from segjax.validation import INSTANCE_METRICS


@dataclasses.dataclass
class ImageInstances:
    index: int
    name: str
    true: np.ndarray  # (H, W) object ids
    predicted: np.ndarray  # every object the model found (the model's own score threshold)
    scores: dict[int, float]
    post_seconds: float  # host time turning the model's outputs into ``predicted``

    def confident(self, threshold: float = SCORE_THRESHOLD) -> np.ndarray:
        """``predicted`` without the objects scoring below ``threshold``."""
        return confident_labels(self.predicted, self.scores, threshold)


def jit_instances(run, splitter: Splitter | None = None):
    """The jitted function of a global batch -> (outputs, global example indices), replicated:
    detections for Mask R-CNN, foreground probabilities for a semantic model."""
    if is_instance_model(run.model):
        step = functools.partial(detect_step, model=run.model)
    else:
        if splitter is None:
            raise ValueError("a semantic model makes instances only with a Splitter")
        step = functools.partial(
            foreground_step, model=run.model, mode=run.config.deep_supervision_mode
        )

    def fn(state, batch):
        return step(state, batch["image"]), batch["index"]

    return jax.jit(
        fn, in_shardings=(run.replicated, run.batch_sharding), out_shardings=run.replicated
    )


def _true_instances(example: dict, eval_size) -> np.ndarray:
    labels = example["instances"]
    if eval_size:
        _, labels = resize(example["image"], labels.astype(np.int32), eval_size)
    return labels


def model_outputs(fn, state, run, split: str) -> Iterator[tuple[int, dict, np.ndarray, object]]:
    """Every example of ``split``: (index, example, true label map, the model's outputs for it:
    its valid detections, or its foreground probabilities cropped to the true map's size)."""
    source = run.dataset.split(split)
    eval_size = tuple(run.config.data.eval_size) or None
    detector = is_instance_model(run.model)
    for _, batch in eval_batches(run, split):
        outputs, indices = jax.device_get(fn(state, batch))
        for row, index in enumerate(indices):
            if index < 0:
                continue
            example = source[int(index)]
            true = _true_instances(example, eval_size)
            if detector:
                keep = outputs["valid"][row]
                mine = {key: outputs[key][row][keep] for key in ("boxes", "scores", "masks")}
            else:
                mine = outputs[row][: true.shape[0], : true.shape[1]]
            yield int(index), example, true, mine


def predict_instances(
    fn, state, run, split: str, splitter: Splitter | None = None, min_area: int = 1
) -> Iterator[ImageInstances]:
    """Every example of ``split`` with its true and predicted label maps (``label_map``)."""
    detector = is_instance_model(run.model)
    for index, example, true, outputs in model_outputs(fn, state, run, split):
        start = time.perf_counter()
        labels, scores, _ = label_map(outputs, true.shape, None if detector else splitter, min_area)
        post = time.perf_counter() - start
        yield ImageInstances(index, example["name"], true, labels, scores, post)


def image_records(images: list[ImageInstances], threshold: float = SCORE_THRESHOLD) -> list[dict]:
    """One record per image: its DSB score over the objects scoring ``threshold`` or more, over
    all of them, and the object counts."""
    records = []
    for image in images:
        confident = image.confident(threshold)
        records.append(
            {
                "name": image.name,
                "dsb_score": im.dsb_score(image.true, confident),
                "dsb_score_all": im.dsb_score(image.true, image.predicted),
                "true_objects": im.object_count(image.true),
                "predicted_objects": im.object_count(confident),
                "predicted_objects_all": im.object_count(image.predicted),
            }
        )
    if not records:
        raise ValueError("no images to score")
    return records


def mask_ap(images: list[ImageInstances], records: list[dict]) -> dict[str, float]:
    """COCO mask AP / AP50 / AP75 over every predicted object, ranked by score: the same at
    every DSB score threshold, so a study of thresholds computes it once."""
    return im.coco_mask_ap(
        [i.true for i in images],
        [i.predicted for i in images],
        [i.scores for i in images],
        max_detections=max(1000, max(r["predicted_objects_all"] for r in records)),
    )


def split_metrics(
    images: list[ImageInstances], records: list[dict], threshold: float, ap: dict[str, float]
) -> dict[str, float]:
    """The split's metrics from ``image_records(images, threshold)`` and ``mask_ap``."""
    return {
        "dsb_score": float(np.mean([r["dsb_score"] for r in records])),
        "dsb_score_all": float(np.mean([r["dsb_score_all"] for r in records])),
        "score_threshold": threshold,
        **ap,
        "true_objects_per_image": float(np.mean([r["true_objects"] for r in records])),
        "predicted_objects_per_image": float(np.mean([r["predicted_objects"] for r in records])),
        "images": len(records),
        "post_seconds_per_image": float(np.mean([i.post_seconds for i in images])),
    }


def score(
    images: list[ImageInstances], threshold: float = SCORE_THRESHOLD
) -> tuple[dict[str, float], list[dict]]:
    """(split metrics, one record per image) of predicted against true label maps (module
    docstring: AP over every object, the DSB score over those scoring ``threshold`` or more)."""
    records = image_records(images, threshold)
    return split_metrics(images, records, threshold, mask_ap(images, records)), records


def evaluate_instances(fn, state, run, split: str, splitter: Splitter | None = None) -> dict:
    """The split's instance metrics (``score``'s first part)."""
    if not run.dataset.has_instances:
        raise ValueError(f"dataset {run.dataset.name!r} has no instance maps to score against")
    return score(list(predict_instances(fn, state, run, split, splitter)))[0]


__all__ = ["INSTANCE_METRICS", "SPLITTERS", "Splitter", "evaluate_instances", "jit_instances"]
