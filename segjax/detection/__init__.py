"""Instance segmentation: the pure functions of Mask R-CNN (boxes, anchors, NMS, RoIAlign,
target assignment, losses, post-processing) and the instance metrics. The Flax modules are in
``segjax.models.detection``."""
