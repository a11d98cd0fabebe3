"""The detection objective of the Trainer (`training.objectives`): RetinaNet's focal + box loss.

Each replica assigns anchors to its own batch's boxes (`retinanet.Labeler`: IoU >=
detection.match_threshold positive, < unmatched_threshold background, ignored in between),
sums the focal loss over every non-ignored anchor and class and the box loss over positive
anchors, and divides by max(1, the number of positive anchors of the GLOBAL batch) (one
all-reduce of a count per step). The replicas' shares therefore sum to the loss normalised by all
positives, whatever the number of replicas (Model Garden divides by its replica's positives + 1
and averages over replicas, which weighs a replica with few objects as much as one with many;
under either recipe this normaliser is ours).

Example:
    objective = Detection(model, cfg.detection)
    trainer.train(dataset_fn, end_step=..., lr_schedule=..., objective=objective)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from transfer_tf.config import DetectionConfig
from transfer_tf.detection.retinanet import Labeler, loss_terms


class Detection:
    """Batches are `(images uint8 [b, S, S, 3], {"boxes": float32 [b, M, 4] yxyx pixels,
    "classes": float32 [b, M]})` with -1 padding (`data.detection.DetectionParser`, train).

    Args:
      model: `retinanet.build_retinanet`'s model (images -> {"box", "classification"}).
      det_cfg: the detection section (matching thresholds, focal alpha/gamma, box loss).
    Metrics (per execution, mean over replicas): `class_loss` and `box_loss` (each normalised by
    the positives), `num_positives` (positive anchors of the global batch).
    """

    metric_names: tuple[str, ...] = ("class_loss", "box_loss", "num_positives")

    def __init__(self, model: keras.Model, det_cfg: DetectionConfig):
        self.model = model
        self.det_cfg = det_cfg
        self.labeler = Labeler(det_cfg)
        self.checkpoint_objects: dict = {}

    def replica_loss(self, batch) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        images, targets = batch
        box_targets, class_targets = self.labeler(images, targets["boxes"], targets["classes"])
        box_targets = tf.stop_gradient(box_targets)
        class_targets = tf.stop_gradient(class_targets)
        predictions = self.model(images, training=True)
        class_sum, box_sum, positives = loss_terms(
            predictions, box_targets, class_targets, self.det_cfg
        )
        context = tf.distribute.get_replica_context()
        global_positives = context.all_reduce("SUM", positives) if context else positives
        # max(1, .): a batch without objects still trains its background scores.
        normalizer = tf.maximum(global_positives, 1.0)
        loss = (class_sum + box_sum) / normalizer
        return loss, {
            "class_loss": class_sum / normalizer,
            "box_loss": box_sum / normalizer,
            "num_positives": global_positives,
        }

    def after_step(self, strategy: tf.distribute.Strategy, step: tf.Tensor) -> None:
        del strategy, step  # nothing besides the model's own update
