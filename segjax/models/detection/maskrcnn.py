"""Mask R-CNN (He et al., 2017) on a segjax encoder and a feature pyramid, with static shapes.

``apply(variables, images, train=False)`` (the default method) detects: a dict of ``boxes``
(B, D, 4) as (x0, y0, x1, y1) in input pixels, ``scores`` (B, D), ``classes`` (B, D) (1..K,
dataset class ids), ``masks`` (B, D, 28, 28) probabilities of the box's class, and ``valid``
(B, D); D = ``max_detections``, the slots past the detections found are invalid.

``apply(variables, images, boxes, classes, instances, method="train_outputs", rngs={"sample":
key}, mutable=["batch_stats"])`` runs the training forward pass: proposals, target assignment
and sampling (``segjax.detection.targets``), the heads on the sampled RoIs; it returns the
outputs and their targets, from which ``segjax.detection.losses.maskrcnn_loss`` computes the loss.
The model holds no loss: the sampling belongs to the forward pass because the RoI heads run on
the sampled proposals.

Every count (anchors, proposals, sampled anchors and RoIs, detections) is fixed by the settings
and the input shape, so a run compiles its steps once. The input is zero-padded to a multiple
of 32 at the bottom and right (as ``SegmentationModel`` does) and boxes are clipped to the
unpadded size.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.detection import boxes as box_ops
from segjax.detection import targets as target_ops
from segjax.detection.anchors import pyramid_anchors
from segjax.detection.postprocess import BOX_WEIGHTS, detect
from segjax.detection.proposals import select_proposals
from segjax.detection.roi_align import level_of_boxes, multilevel_roi_align
from segjax.models.conv_ops import conv_implementation
from segjax.models.detection.heads import BoxHead, MaskHead, RPNHead
from segjax.models.detection.pyramid import STRIDES

POOLED_LEVELS = 4  # the RoI heads read P2..P5; P6 serves the RPN only
BOX_POOL, MASK_POOL = 7, 14


@dataclasses.dataclass(frozen=True)
class DetectionSettings:
    """Mask R-CNN's counts and thresholds (Detectron2's names in brackets; defaults are
    torchvision's ``maskrcnn_resnet50_fpn`` where the two differ)."""

    anchor_sizes: tuple[float, ...] = (32, 64, 128, 256, 512)  # one per level P2..P6
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    rpn_pre_nms_train: int = 2000  # per level [PRE_NMS_TOPK_TRAIN]
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    rpn_nms_threshold: float = 0.7
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_iou_thresholds: tuple[float, float] = (0.3, 0.7)  # negative below, positive from
    roi_batch_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_iou_threshold: float = 0.5
    roi_sampling_ratio: int = 2
    roi_canonical_size: float = 224.0  # FPN level assignment: this size reads P4
    box_head_dim: int = 1024
    mask_head_channels: int = 256
    mask_head_convs: int = 4
    score_threshold: float = 0.05
    detection_nms_threshold: float = 0.5
    max_detections: int = 100

    @property
    def mask_rois_per_image(self) -> int:
        return int(self.roi_batch_per_image * self.roi_positive_fraction)


class MaskRCNN(nn.Module):
    encoder: nn.Module
    pyramid: nn.Module
    num_classes: int  # including background (class 0), as the dataset counts them
    in_channels: int
    settings: DetectionSettings = DetectionSettings()
    freeze_encoder_bn: bool = False
    conv_impl: str = "auto"
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        s = self.settings
        self.rpn = RPNHead(len(s.anchor_ratios), self.dtype)
        self.box_head = BoxHead(self.num_classes, s.box_head_dim, self.dtype)
        self.mask_head = MaskHead(
            self.num_classes, s.mask_head_channels, s.mask_head_convs, self.dtype
        )

    def _check(self, x):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (batch, height, width, {self.in_channels}) (NHWC with "
                f"in_channels={self.in_channels}), got {tuple(x.shape)}"
            )

    def _levels(self, x, train: bool):
        """(pyramid P2..P6, padded size, unpadded size, anchors, anchors per level)."""
        self._check(x)
        height, width = x.shape[1:3]
        pad_h, pad_w = -height % 32, -width % 32
        if pad_h or pad_w:
            x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        with conv_implementation(self.conv_impl):
            features = self.encoder(x, train and not self.freeze_encoder_bn)
            levels = self.pyramid(features[1:5], train)
        s = self.settings
        anchors, counts = pyramid_anchors(x.shape[1:3], STRIDES, s.anchor_sizes, s.anchor_ratios)
        return levels, (height, width), jnp.asarray(anchors), counts

    def _pool(self, levels, rois, size: int):
        """(B, R, size, size, C) RoIAlign of each image's ``rois`` (B, R, 4) on P2..P5."""
        s = self.settings
        pooled = levels[:POOLED_LEVELS]
        scales = [1.0 / stride for stride in STRIDES[:POOLED_LEVELS]]

        def one(features, boxes):
            level = level_of_boxes(boxes, 2, 2 + POOLED_LEVELS - 1, s.roi_canonical_size)
            return multilevel_roi_align(
                features, boxes, level, scales, size, s.roi_sampling_ratio, aligned=True
            )

        return jax.vmap(one)(pooled, rois)

    def _box_head(self, levels, rois):
        batch, count = rois.shape[:2]
        features = self._pool(levels, rois, BOX_POOL).astype(self.dtype)
        logits, deltas = self.box_head(features.reshape(batch * count, *features.shape[2:]))
        return logits.reshape(batch, count, -1), deltas.reshape(batch, count, *deltas.shape[1:])

    def _mask_head(self, levels, rois):
        batch, count = rois.shape[:2]
        features = self._pool(levels, rois, MASK_POOL).astype(self.dtype)
        logits = self.mask_head(features.reshape(batch * count, *features.shape[2:]))
        return logits.reshape(batch, count, *logits.shape[1:])

    def _rpn(self, levels):
        return self.rpn(levels)

    def _proposals(self, logits, deltas, anchors, counts, size, train: bool):
        s = self.settings
        pre = s.rpn_pre_nms_train if train else s.rpn_pre_nms_test
        post = s.rpn_post_nms_train if train else s.rpn_post_nms_test
        post = min(post, sum(min(pre, c) for c in counts))

        def one(logit, delta):
            return select_proposals(
                logit, delta, anchors, counts, pre, post, s.rpn_nms_threshold, size
            )

        return jax.vmap(one)(jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas))

    def __call__(self, x, train: bool = False) -> dict[str, jax.Array]:
        s = self.settings
        levels, size, anchors, counts = self._levels(x, train)
        logits, deltas = self._rpn(levels)
        proposals, _, proposal_valid = self._proposals(logits, deltas, anchors, counts, size, False)
        class_logits, box_deltas = self._box_head(levels, proposals)

        def one(cls, dlt, props, valid):
            return detect(
                cls,
                dlt,
                props,
                valid,
                size,
                s.score_threshold,
                s.detection_nms_threshold,
                s.max_detections,
            )

        boxes, scores, classes, valid = jax.vmap(one)(
            class_logits, box_deltas, proposals, proposal_valid
        )
        mask_logits = self._mask_head(levels, boxes)  # (B, D, 28, 28, K)
        chosen = jnp.take_along_axis(mask_logits, (classes - 1)[:, :, None, None, None], axis=-1)[
            ..., 0
        ]
        return {
            "boxes": boxes,
            "scores": scores,
            "classes": jnp.where(valid, classes, 0),
            "masks": jax.nn.sigmoid(chosen),
            "valid": valid,
        }

    def train_outputs(self, x, gt_boxes, gt_classes, instances) -> dict[str, jax.Array]:
        """The training forward pass (module docstring); ``gt_boxes`` (B, M, 4), ``gt_classes``
        (B, M) with 0 for empty slots, ``instances`` (B, H, W) slot + 1 of each object's
        pixels."""
        s = self.settings
        levels, size, anchors, counts = self._levels(x, True)
        logits, deltas = self._rpn(levels)
        proposals, _, proposal_valid = self._proposals(logits, deltas, anchors, counts, size, True)
        batch = x.shape[0]
        rpn_rng, roi_rng = jax.random.split(self.make_rng("sample"))
        gt_valid = gt_classes > 0

        def rpn_targets(rng, boxes, valid):
            iou = box_ops.pairwise_iou(anchors, boxes)
            low, high = s.rpn_iou_thresholds
            matched, label = target_ops.match(iou, valid, low, high, allow_low_quality=True)
            positive, negative = target_ops.sample(
                rng, label, s.rpn_batch_per_image, s.rpn_positive_fraction
            )
            targets = target_ops.box_targets(boxes[matched], anchors, (1.0, 1.0, 1.0, 1.0))
            return positive, positive | negative, targets

        rpn_positive, rpn_sampled, rpn_box_targets = jax.vmap(rpn_targets)(
            jax.random.split(rpn_rng, batch), gt_boxes, gt_valid
        )

        def roi_targets(rng, props, props_valid, boxes, classes, valid):
            # The true boxes join the proposals (Detectron2), so every object has positives.
            candidates = jnp.concatenate([props, boxes])
            candidate_valid = jnp.concatenate([props_valid, valid])
            iou = box_ops.pairwise_iou(candidates, boxes)
            iou = jnp.where(candidate_valid[:, None], iou, -1.0)
            t = s.roi_iou_threshold
            matched, label = target_ops.match(iou, valid, t, t, allow_low_quality=False)
            label = jnp.where(candidate_valid, label, target_ops.IGNORED)
            positive, negative = target_ops.sample(
                rng, label, s.roi_batch_per_image, s.roi_positive_fraction
            )
            slots, slot_positive, slot_sampled = target_ops.sampled_slots(
                positive, negative, s.roi_batch_per_image
            )
            rois = candidates[slots]
            gt_index = matched[slots]
            roi_classes = jnp.where(slot_positive, classes[gt_index], 0)
            targets = target_ops.box_targets(boxes[gt_index], rois, BOX_WEIGHTS)
            return rois, roi_classes, slot_positive, slot_sampled, targets, gt_index

        rois, roi_classes, roi_positive, roi_sampled, roi_box_targets, gt_index = jax.vmap(
            roi_targets
        )(
            jax.random.split(roi_rng, batch),
            proposals,
            proposal_valid,
            gt_boxes,
            gt_classes,
            gt_valid,
        )
        rois = jax.lax.stop_gradient(rois)
        class_logits, box_deltas = self._box_head(levels, rois)
        # Deltas of each RoI's true class (background RoIs: class 1's, weighted 0).
        fg_class = jnp.maximum(roi_classes, 1) - 1
        roi_deltas = jnp.take_along_axis(box_deltas, fg_class[:, :, None, None], axis=2)[:, :, 0]

        # Masks: the first slots hold every sampled positive.
        m = s.mask_rois_per_image
        mask_rois = rois[:, :m]
        mask_logits = self._mask_head(levels, mask_rois)  # (B, m, 28, 28, K)
        mask_logits = jnp.take_along_axis(mask_logits, fg_class[:, :m, None, None, None], axis=-1)[
            ..., 0
        ]
        mask_size = mask_logits.shape[-1]
        mask_targets = jax.vmap(target_ops.mask_targets, in_axes=(0, 0, 0, None))(
            instances, mask_rois, gt_index[:, :m] + 1, mask_size
        )
        return {
            "rpn_logits": logits,
            "rpn_deltas": deltas,
            "rpn_positive": rpn_positive,
            "rpn_sampled": rpn_sampled,
            "rpn_targets": rpn_box_targets,
            "rpn_slots": jnp.float32(batch * s.rpn_batch_per_image),
            "roi_logits": class_logits,
            "roi_classes": roi_classes,
            "roi_deltas": roi_deltas,
            "roi_targets": roi_box_targets,
            "roi_positive": roi_positive,
            "roi_sampled": roi_sampled,
            "mask_logits": mask_logits,
            "mask_targets": mask_targets,
            "mask_positive": roi_positive[:, :m],
        }
