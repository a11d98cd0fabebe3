"""What a training step minimises: the plug-in point of the Trainer for tasks and methods.

The Trainer owns everything around the step (global step, LR, weight decay, loss scaling, the
optimizer update, EMA, checkpoints); an objective owns the forward pass and the loss. Supervised
classification is `Supervised`; self-supervised methods (`transfer_tf.ssl`) and detection are
objectives too, so a new method is a new class, not a fork of the loop.

An objective has:
  metric_names: names of the scalar metrics `replica_loss` returns (logged each execution).
  replica_loss(batch) -> (loss, metrics): called in replica context on one per-replica batch;
    `loss` is this replica's share of the global-batch loss (float32 scalar; the sum over
    replicas is the loss on the global batch, as `tf.nn.compute_average_loss` gives), `metrics`
    {name: float32 scalar}, reported as the mean over replicas.
  after_step(strategy, step): called in cross-replica context after each optimizer step, with
    the global step (int64 tensor) the update was for (e.g. a momentum target network's update).
  checkpoint_objects: {name: trackable} that must be checkpointed with the run (heads, target
    networks): the job passes them to `Trainer(extra_checkpoint_objects=...)`.

Example:
    objective = Supervised(model, softmax_cross_entropy(0.1), global_batch_size=1024)
    trainer.train(dataset_fn, end_step=5000, lr_schedule=..., objective=objective)
"""

from __future__ import annotations

from typing import Protocol

import keras
import tensorflow as tf

from transfer_tf.training.losses import LossFn


class Objective(Protocol):
    """See the module docstring."""

    metric_names: tuple[str, ...]
    checkpoint_objects: dict

    def replica_loss(self, batch) -> tuple[tf.Tensor, dict[str, tf.Tensor]]: ...

    def after_step(self, strategy: tf.distribute.Strategy, step: tf.Tensor) -> None: ...


class Supervised:
    """`loss_fn(labels, model(images))` averaged over the global batch; batches are
    `(images uint8 [b,S,S,3], labels float32 [b,C])`.

    Args:
      model: images -> float32 logits `[b, C]`.
      loss_fn: (labels, logits) -> per-example float32 `[b]` (`training.losses`).
      global_batch_size: the divisor of the per-example sum (all replicas together).
    """

    metric_names: tuple[str, ...] = ()

    def __init__(self, model: keras.Model, loss_fn: LossFn, global_batch_size: int):
        self.model = model
        self.loss_fn = loss_fn
        self.global_batch_size = global_batch_size
        self.checkpoint_objects: dict = {}

    def replica_loss(self, batch) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        images, labels = batch
        logits = self.model(images, training=True)
        per_example = self.loss_fn(labels, logits)
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
        return loss, {}

    def after_step(self, strategy: tf.distribute.Strategy, step: tf.Tensor) -> None:
        del strategy, step  # nothing besides the model's own update
