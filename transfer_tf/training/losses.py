"""Per-example losses on float32 logits; the loop averages them over the GLOBAL batch.

A loss function is `loss_fn(labels float32 [B, C], logits float32 [B, C]) -> float32 [B]`.

Example:
    loss_fn = softmax_cross_entropy(label_smoothing=0.1)
    per_example = loss_fn(one_hot_labels, logits)   # [B]
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def softmax_cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """Softmax CE against dense (one-hot or soft) labels, smoothed towards uniform."""

    def loss_fn(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(labels, tf.float32)
        if label_smoothing > 0:
            n = tf.cast(tf.shape(labels)[-1], tf.float32)
            labels = labels * (1.0 - label_smoothing) + label_smoothing / n
        return tf.nn.softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))

    return loss_fn


def sigmoid_cross_entropy(pos_weight: float = 1.0, label_smoothing: float = 0.0) -> LossFn:
    """Multi-label binary CE, averaged over classes, with `pos_weight` on the positive terms.

    `label_smoothing` e moves every binary target towards 1/2: y * (1 - e) + e / 2 (the
    keras.losses.BinaryCrossentropy convention), so a negative class is aimed at e / 2."""

    def loss_fn(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(labels, tf.float32)
        if label_smoothing > 0:
            labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
        per_class = tf.nn.weighted_cross_entropy_with_logits(
            labels, tf.cast(logits, tf.float32), pos_weight
        )
        return tf.reduce_mean(per_class, axis=-1)

    return loss_fn


def for_task(task: str, label_smoothing: float = 0.0, pos_weight: float = 1.0) -> LossFn:
    """`single_label` -> softmax CE, `multilabel` -> sigmoid BCE (both with label smoothing)."""
    if task == "multilabel":
        return sigmoid_cross_entropy(pos_weight, label_smoothing)
    return softmax_cross_entropy(label_smoothing)
