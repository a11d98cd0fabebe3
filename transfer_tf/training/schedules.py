"""Learning-rate schedules as functions of the global step (so resuming restores the position).

A schedule is any callable `step (int64 scalar tensor) -> float32 scalar tensor`; the loop calls it
with the global step before each update.

Example:
    lr = warmup_cosine(peak=0.4, warmup_steps=5 * 1251, total_steps=90 * 1251)
    lr(tf.constant(0, tf.int64))  # -> 0.0 ; peak at step 6255 ; ~0 at the end
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
from absl import logging

from transfer_tf.config import TrainConfig

Schedule = Callable[[tf.Tensor], tf.Tensor]


def _f(step: tf.Tensor) -> tf.Tensor:
    return tf.cast(step, tf.float32)


def warmup_cosine(
    peak: float, warmup_steps: int, total_steps: int, start_step: int = 0, final: float = 0.0
) -> Schedule:
    """Linear warmup from 0 to `peak` over `warmup_steps`, then cosine decay to `final` at
    `start_step + total_steps`. Steps before `start_step` count as 0 (phases start mid-run)."""

    def schedule(step: tf.Tensor) -> tf.Tensor:
        t = tf.maximum(_f(step) - float(start_step), 0.0)
        warm = peak * t / float(max(warmup_steps, 1))
        frac = tf.clip_by_value(
            (t - warmup_steps) / float(max(total_steps - warmup_steps, 1)), 0.0, 1.0
        )
        cos = final + 0.5 * (peak - final) * (1.0 + tf.cos(3.141592653589793 * frac))
        return tf.where(t < float(warmup_steps), warm, cos)

    return schedule


def warmup_step_decay(
    peak: float,
    warmup_steps: int,
    boundaries: Sequence[int],
    rate: float,
    start_step: int = 0,
) -> Schedule:
    """Linear warmup, then `peak * rate**k` after the k-th boundary (absolute steps from start)."""

    def schedule(step: tf.Tensor) -> tf.Tensor:
        t = tf.maximum(_f(step) - float(start_step), 0.0)
        warm = peak * t / float(max(warmup_steps, 1))
        k = tf.reduce_sum(
            tf.cast(t >= tf.constant([float(b) for b in boundaries] or [1e30]), tf.float32)
        )
        return tf.where(t < float(warmup_steps), warm, peak * tf.pow(rate, k))

    return schedule


def warmup_constant(peak: float, warmup_steps: int = 0, start_step: int = 0) -> Schedule:
    """Linear warmup to `peak`, then constant."""
    return warmup_step_decay(peak, warmup_steps, [], 1.0, start_step)


def from_train_config(train_cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> Schedule:
    """The pretraining schedule: peak LR = base_learning_rate * global_batch_size / 256, warmup
    `warmup_epochs` (capped at `total_steps`, with a warning, as transfer phases cap theirs), then
    `lr_schedule` (cosine to 0 at `total_steps`, step decay at `step_decay_epochs` by
    `step_decay_rate`, or constant)."""
    peak = train_cfg.base_learning_rate * train_cfg.global_batch_size / 256.0
    warmup = int(round(train_cfg.warmup_epochs * steps_per_epoch))
    if warmup > total_steps:
        logging.warning(
            "train.warmup_epochs=%g is %d steps, longer than the run (%d steps): warming up over "
            "the whole run instead",
            train_cfg.warmup_epochs,
            warmup,
            total_steps,
        )
        warmup = total_steps
    if train_cfg.lr_schedule == "cosine":
        return warmup_cosine(peak, warmup, total_steps)
    if train_cfg.lr_schedule == "step":
        bounds = [int(round(e * steps_per_epoch)) for e in train_cfg.step_decay_epochs]
        return warmup_step_decay(peak, warmup, bounds, train_cfg.step_decay_rate)
    return warmup_constant(peak, warmup)
