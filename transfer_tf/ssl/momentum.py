"""BYOL's target network: a momentum (EMA) copy of the online network, and its cosine schedule.

    tau(k) = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2        (tau_base 0.996 -> 1 at k = K)
    target <- tau * target + (1 - tau) * online                    after every optimizer step

The target is a second Keras model of the same architecture (its forward pass is needed), whose
weights no optimizer touches: leave its variables out of the trained ones and it gets no
gradient. Only trainable-kind weights (kernels, biases, BN gamma/beta) are averaged; the target's
BatchNormalization moving statistics are its own, updated by its forward pass in training mode
(BYOL runs the target with batch statistics, as the online network).

Under a tf.distribute strategy the update runs in cross-replica context, after `strategy.run`:
each device moves its copy of a target variable towards its own copy of the online variable
(`strategy.extended.update`), so the replicas stay exactly as identical as the online weights
(the same pattern as `training.ema.WeightEMA`). tau is a function of the global step, which the
trainer checkpoints, so a resumed run continues the schedule with no state of its own here.

Example:
    with strategy.scope():
        online = build_online()                       # backbone + projector
        target = build_online()                       # same architecture, its own variables
    updater = MomentumUpdater(online, target, base=0.996, total_steps=K)
    updater.copy_online_to_target(strategy)           # once, at step 0 (not on resume)
    ... strategy.run(step_fn, ...)                    # optimizer step on the online network
    updater.update(strategy, global_step)             # cross-replica context, every step
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def cosine_momentum(step: tf.Tensor | int, total_steps: int, base: float = 0.996) -> tf.Tensor:
    """BYOL's target momentum at `step` (float32 scalar): `base` at 0, rising to 1 at
    `total_steps` along a half cosine, and 1 after it (the target then stops moving).

    Args:
      step: int global step (k); total_steps: K > 0; base: tau_base in [0, 1].
    """
    if total_steps <= 0:
        raise ValueError(f"cosine_momentum needs total_steps > 0, got {total_steps}")
    progress = tf.minimum(tf.cast(step, tf.float32) / float(total_steps), 1.0)
    return 1.0 - (1.0 - base) * (tf.cos(math.pi * progress) + 1.0) / 2.0


def _backend(variable):
    """The tf.Variable behind a keras.Variable (a distributed one under a strategy)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def paired_weights(online: keras.Model, target: keras.Model) -> list[tuple]:
    """(online, target) trainable-kind weights of two models of the same architecture, in
    `model.weights` order. Raises ValueError when their counts or shapes differ."""
    online_weights = [w for w in online.weights if w.trainable]
    target_weights = [w for w in target.weights if w.trainable]
    if len(online_weights) != len(target_weights):
        raise ValueError(
            f"online has {len(online_weights)} trainable weights, target {len(target_weights)}"
        )
    pairs = list(zip(online_weights, target_weights, strict=True))
    for o, t in pairs:
        if tuple(o.shape) != tuple(t.shape):
            raise ValueError(f"online {o.path} {o.shape} != target {t.path} {t.shape}")
    return pairs


def momentum_update(
    strategy: tf.distribute.Strategy, pairs: list[tuple], tau: tf.Tensor | float
) -> None:
    """`target <- tau * target + (1 - tau) * online` for each (online, target) pair.

    Call in cross-replica context (outside `strategy.run`), inside or outside a tf.function.
    """
    tau = tf.convert_to_tensor(tau, tf.float32)

    def apply(target, online):
        rate = tf.cast(1.0 - tau, target.dtype)
        # assign_sub of the gap: the same update as tau*t + (1-tau)*o, one fewer full-size temp.
        return target.assign_sub(rate * (target - tf.cast(online, target.dtype)))

    for online, target in pairs:
        strategy.extended.update(_backend(target), apply, args=(_backend(online),), group=False)


class MomentumUpdater:
    """Moves `target`'s trainable weights towards `online`'s on BYOL's cosine schedule.

    Args:
      online, target: Keras models of the same architecture, built under the same strategy scope.
      total_steps: K, the run's number of optimizer steps (the schedule ends there).
      base: tau_base (BYOL: 0.996; 0.99 for short runs).
    """

    def __init__(
        self, online: keras.Model, target: keras.Model, total_steps: int, base: float = 0.996
    ):
        if not 0.0 <= base <= 1.0:
            raise ValueError(f"momentum base must be in [0, 1], got {base}")
        self.pairs = paired_weights(online, target)
        self.total_steps = int(total_steps)
        self.base = float(base)

    def tau(self, step: tf.Tensor | int) -> tf.Tensor:
        """float32 momentum at global step `step` (`cosine_momentum`)."""
        return cosine_momentum(step, self.total_steps, self.base)

    def update(self, strategy: tf.distribute.Strategy, step: tf.Tensor | int) -> tf.Tensor:
        """One target update with tau(step); cross-replica context. Returns tau (float32)."""
        tau = self.tau(step)
        momentum_update(strategy, self.pairs, tau)
        return tau

    def copy_online_to_target(self, strategy: tf.distribute.Strategy | None = None) -> None:
        """target := online, exactly (BYOL initialises the target as a copy of the online net)."""
        strategy = strategy or tf.distribute.get_strategy()
        for online, target in self.pairs:
            # A plain assign: tau = 0 through the update would round (t - (t - o) != o).
            strategy.extended.update(
                _backend(target),
                lambda t, o: t.assign(tf.cast(o, t.dtype)),
                args=(_backend(online),),
                group=False,
            )
