"""The compiled training steps of `training.loop.Trainer`: a `tf.function` that runs a block of
optimizer steps under the Trainer's strategy (apart from loop.py, which holds the loop's control:
checkpoints, hooks, stops; `Trainer.compiled_steps` is the public door).

Example:
    train_steps = compiled_steps(trainer, objective, lr_schedule, variables)
    mean_loss, last_total, last_metrics = train_steps(iterator, tf.constant(10, tf.int32))
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import is_decayed
from transfer_tf.training.objectives import Objective
from transfer_tf.training.schedules import Schedule


def compiled_steps(
    trainer, objective: Objective, lr_schedule: Schedule, variables: list
) -> Callable:
    """The tf.function `(distributed iterator, num_steps int32) -> (mean loss, last total
    loss, last metrics)` that runs `num_steps` optimizer steps of `objective` on `variables`
    (what `train` runs; the autotune probe times it).

    `trainer`: the `training.loop.Trainer` whose optimizer, strategy, EMA, weight decay, XLA
    setting and global step the steps use (untyped here: loop.py imports this module).
    """
    optimizer, strategy, ema = trainer.optimizer, trainer.strategy, trainer.ema
    decayed = [v for v in variables if is_decayed(v)] if trainer.weight_decay > 0 else []
    names = tuple(objective.metric_names)

    # Traced as written (objectives, losses and optimizers use tf ops for their control flow):
    # AutoGraph converting every objective's source cost seconds at each process start.
    @tf.autograph.experimental.do_not_convert
    def replica_step(*batch):
        with tf.GradientTape() as tape:
            loss, metrics = objective.replica_loss(batch if len(batch) > 1 else batch[0])
            total = loss
            if decayed:
                l2 = tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed])
                total += tf.nn.scale_regularization_loss(trainer.weight_decay * l2)
            scaled = optimizer.scale_loss(total)
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, total, tuple(tf.cast(metrics[n], tf.float32) for n in names)

    step_fn = tf.function(replica_step, jit_compile=True) if trainer.jit_compile else replica_step

    # Keras' public `learning_rate` is the optimizer's LR variable when it was built with a
    # float (LossScaleOptimizer forwards it to its inner optimizer); the loop drives it.
    lr_variable = optimizer.learning_rate
    if not isinstance(lr_variable, keras.Variable):
        raise UsageError(
            f"the optimizer's learning_rate must be a float (the loop sets it every step), "
            f"got {type(lr_variable).__name__}"
        )

    @tf.function
    def train_steps(iterator, num_steps):
        loss_sum = tf.constant(0.0)
        total_last = tf.constant(0.0)
        metrics_last = tuple(tf.constant(0.0) for _ in names)
        for _ in tf.range(num_steps):
            # Cross-replica assignment: every replica sees the LR of the current global step.
            step = trainer.global_step.read_value()
            lr_variable.assign(tf.cast(lr_schedule(step), lr_variable.dtype))
            loss, total, metrics = strategy.run(step_fn, args=next(iterator))
            objective.after_step(strategy, step)
            if ema is not None:
                ema.update(strategy)
            loss_sum += strategy.reduce("SUM", loss, axis=None)
            total_last = strategy.reduce("SUM", total, axis=None)
            metrics_last = tuple(strategy.reduce("MEAN", m, axis=None) for m in metrics)
            trainer.global_step.assign_add(1)
        mean_loss = loss_sum / tf.cast(num_steps, tf.float32)
        return mean_loss, total_last, dict(zip(names, metrics_last, strict=True))

    return train_steps
