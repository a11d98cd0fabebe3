"""A weight EMA of our own: a checkpointed moving average of a model's weights with warm-up.

Keras' built-in `use_ema` keeps its averages in private optimizer attributes, has no warm-up and
ties the averages' checkpoint path to the optimizer's wrapper (a float16 run's
`LossScaleOptimizer`), so a float32 rebuild found nothing to restore. This is the Orbit /
Model Garden shape instead: a small trackable next to the model.

    with strategy.scope():
        ema = WeightEMA(model, decay=0.9999)
    ema.reset()                     # averages := weights (the loop does it before update 0)
    ema.update(strategy)            # cross-replica context, after each optimizer step
    with ema.swapped(strategy):     # the model holds the averages inside the block
        evaluate(model)
    ema.copy_to_model()             # keep the averages in the model (load_model)

Semantics:
- Averaged: every floating-point weight of the model, trainable-kind ones and BatchNorm moving
  statistics alike (Model Garden's ExponentialMovingAverage does the same), so the averaged
  model is self-consistent. Frozen weights simply average to themselves.
- Update number t (0-based; the count is checkpointed as `num_updates`) uses
  `decay_t = min(decay, (1 + t) / (10 + t))` (Model Garden's dynamic decay, tf.train's
  `num_updates` rule): `avg <- decay_t * avg + (1 - decay_t) * w`. Without the warm-up a 0.9999
  average is still ~the initial weights after thousands of steps.
- Checkpoint: `averages` (in `model.weights` order) and `num_updates`; the training checkpoint
  stores it under the key `ema`.
- Under a tf.distribute strategy each device updates and swaps its own copy of an average from
  its own copy of the weight (`strategy.extended.update`), so the averages are exactly as
  replica-consistent as the weights.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


class _Weights:
    """Holds the model's variables out of the checkpoint graph (they are checkpointed as the
    model's; a plain object is not tracked)."""

    def __init__(self, variables: list):
        self.variables = list(variables)


def _is_float(variable: keras.Variable) -> bool:
    return tf.as_dtype(keras.backend.standardize_dtype(variable.dtype)).is_floating


def _backend(variable):
    """The tf.Variable behind a keras.Variable (a distributed one under a strategy)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class WeightEMA(tf.Module):
    """Exponential moving average of `model`'s float weights (create under `strategy.scope()`).

    Args:
      model: the Keras model whose `model.weights` (floating dtypes) are averaged.
      decay: the asymptotic decay `d` in (0, 1); 0 builds a restore-only EMA (`update` refuses).
    """

    def __init__(self, model: keras.Model, decay: float):
        super().__init__(name="weight_ema")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"WeightEMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self._model = _Weights(v for v in model.weights if _is_float(v))
        self.averages = [
            tf.Variable(
                tf.convert_to_tensor(_backend(v)),
                trainable=False,
                name=f"ema/{v.path}".replace(":", "_"),
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            for v in self._model.variables
        ]
        self.num_updates = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="ema_num_updates",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    @property
    def weights(self) -> list:
        """The model variables averaged, aligned with `averages`."""
        return list(self._model.variables)

    def decay_at(self, t: tf.Tensor) -> tf.Tensor:
        """float32 decay of update number `t` (0-based): `min(decay, (1 + t) / (10 + t))`."""
        t = tf.cast(t, tf.float32)
        return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + t) / (10.0 + t))

    def update(self, strategy: tf.distribute.Strategy) -> None:
        """One EMA step from the current weights; call in cross-replica context (inside or outside
        a tf.function) after the optimizer step."""
        if self.decay <= 0.0:
            raise ValueError("this WeightEMA was built for restoring only (decay 0)")
        decay = self.decay_at(self.num_updates.read_value())

        def apply(average, weight):
            rate = tf.cast(1.0 - decay, average.dtype)
            return average.assign_sub(rate * (average - tf.cast(weight, average.dtype)))

        for average, weight in zip(self.averages, self._model.variables, strict=True):
            strategy.extended.update(average, apply, args=(_backend(weight),), group=False)
        self.num_updates.assign_add(1)

    def reset(self, strategy: tf.distribute.Strategy | None = None) -> None:
        """Averages := current weights and `num_updates` := 0 (a fresh average)."""
        strategy = strategy or tf.distribute.get_strategy()
        for average, weight in zip(self.averages, self._model.variables, strict=True):
            strategy.extended.update(
                average, lambda a, w: a.assign(tf.cast(w, a.dtype)), args=(_backend(weight),)
            )
        self.num_updates.assign(0)

    def _swap(self, strategy: tf.distribute.Strategy) -> None:
        def swap(average, weight):
            held = tf.identity(average)
            average.assign(tf.cast(weight, average.dtype))
            return weight.assign(tf.cast(held, weight.dtype))

        for average, weight in zip(self.averages, self._model.variables, strict=True):
            strategy.extended.update(average, swap, args=(_backend(weight),))

    @contextlib.contextmanager
    def swapped(self, strategy: tf.distribute.Strategy | None = None):
        """Within the block the model holds the averages (and the averages the weights)."""
        strategy = strategy or tf.distribute.get_strategy()
        self._swap(strategy)
        try:
            yield self
        finally:
            self._swap(strategy)

    def copy_to_model(self) -> None:
        """Assigns the averages to the model's weights (for inference and export)."""
        for average, weight in zip(self.averages, self._model.variables, strict=True):
            weight.assign(tf.cast(average, weight.dtype))
