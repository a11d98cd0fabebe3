"""The segmentation objective of the Trainer (`training.objectives`): per-pixel softmax
cross-entropy with the ignore label, normalised by the GLOBAL count of valid pixels.

Each replica upsamples its logits (stride 4) bilinearly to the label size, sums the cross-entropy
over its pixels whose label is not 255, and divides by the number of such pixels in the whole
global batch (one all-reduce of a count per step). The replicas' shares therefore sum to the
one-device loss, the mean over every valid pixel of the batch, whatever the number of replicas
(a per-replica mean averaged over replicas would weigh a replica of mostly-ignored crops as much
as a full one).

Example:
    objective = Segmentation(model)
    trainer.train(dataset_fn, end_step=..., lr_schedule=..., objective=objective)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from transfer_tf.segmentation.model import upsample_logits
from transfer_tf.segmentation.settings import IGNORE_LABEL


def pixel_loss_terms(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(summed cross-entropy float32 scalar, valid pixel count float32 scalar) of logits
    float32 [B, s, s, C] against class maps uint8/int [B, S, S] (255 = ignored)."""
    labels = tf.cast(labels, tf.int32)
    logits = upsample_logits(logits, labels.shape[1] or tf.shape(labels)[1])
    valid = tf.not_equal(labels, IGNORE_LABEL)
    safe = tf.where(valid, labels, 0)  # any class: its term is masked out below
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    weights = tf.cast(valid, tf.float32)
    return tf.reduce_sum(per_pixel * weights), tf.reduce_sum(weights)


class Segmentation:
    """Batches are `(images uint8 [b, S, S, 3], class maps uint8 [b, S, S])` (`data.segmentation`
    train). Metric (per execution, mean over replicas): `valid_pixels`, the non-ignored pixels
    of the global batch (the loss's divisor).

    Args:
      model: `segmentation.model.build_segmenter`'s model (images -> logits at stride 4).
    """

    metric_names: tuple[str, ...] = ("valid_pixels",)

    def __init__(self, model: keras.Model):
        self.model = model
        self.checkpoint_objects: dict = {}

    def replica_loss(self, batch) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        images, labels = batch
        logits = self.model(images, training=True)
        loss_sum, valid = pixel_loss_terms(logits, labels)
        context = tf.distribute.get_replica_context()
        global_valid = context.all_reduce("SUM", valid) if context else valid
        # max(1, .): a batch of only ignored pixels contributes nothing (rather than NaN).
        return loss_sum / tf.maximum(global_valid, 1.0), {"valid_pixels": global_valid}

    def after_step(self, strategy: tf.distribute.Strategy, step: tf.Tensor) -> None:
        del strategy, step  # nothing besides the model's own update
