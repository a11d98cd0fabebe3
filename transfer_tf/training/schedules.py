"""Learning-rate schedules as functions of the global step (so resuming restores the position).

A schedule is any callable `step (int64 scalar tensor) -> float32 scalar tensor`; the loop calls it
with the global step before each update.

Every learning rate in a config is per 256 images (`train.base_learning_rate`, a transfer phase's
`base_learning_rate`, `transfer.base_learning_rate`); `peak_learning_rate` is the one rule that
turns it into the peak LR at the run's global batch: x B/256 for sgd and lars (linear scaling,
Goyal et al., 2017), x sqrt(B/256) for adam and adamw (square-root scaling, Malladi et al., 2022,
"On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"). At batch 256 every optimizer
trains at the written number, and a config means the same step per image at any batch.

Example:
    peak = peak_learning_rate(0.1, 1024, "sgd")  # -> 0.4
    lr = warmup_cosine(peak=peak, warmup_steps=5 * 1251, total_steps=90 * 1251)
    lr(tf.constant(0, tf.int64))  # -> 0.0 ; peak at step 6255 ; ~0 at the end
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tensorflow as tf
from absl import logging

from transfer_tf.config import TrainConfig

Schedule = Callable[[tf.Tensor], tf.Tensor]


# The batch the config's learning rates are written for.
REFERENCE_BATCH = 256
# How each optimizer's LR follows the global batch (module doc).
BATCH_SCALING: dict[str, str] = {"sgd": "linear", "lars": "linear", "adam": "sqrt", "adamw": "sqrt"}


def _batch_scaling(optimizer: str) -> str:
    if optimizer not in BATCH_SCALING:
        raise ValueError(f"no learning-rate batch scaling for optimizer {optimizer!r}")
    return BATCH_SCALING[optimizer]


def peak_learning_rate(base_per_256: float, global_batch_size: int, optimizer: str) -> float:
    """The peak LR at `global_batch_size` of a learning rate written per 256 images.

    Args:
      base_per_256: the config's value (`base_learning_rate`), the LR at a global batch of 256.
      global_batch_size: the run's batch of one step over all replicas (B).
      optimizer: sgd | lars (x B/256) | adam | adamw (x sqrt(B/256)).
    Returns:
      float: the absolute learning rate the optimizer gets (before warmup and decay).

    Example: `peak_learning_rate(0.1, 32, "sgd")` -> 0.0125;
    `peak_learning_rate(1e-3, 1024, "adam")` -> 0.002.
    """
    if _batch_scaling(optimizer) == "linear":
        # base * B / 256 in this order: power-of-two batches give the exact binary value
        # (BiT's 0.0015 per 256 is exactly its 0.003 * B / 512).
        return base_per_256 * global_batch_size / float(REFERENCE_BATCH)
    return base_per_256 * math.sqrt(global_batch_size / float(REFERENCE_BATCH))


def base_learning_rate_for(peak: float, global_batch_size: int, optimizer: str) -> float:
    """The per-256 value whose `peak_learning_rate` at `global_batch_size` is `peak`: how an
    absolute LR measured at one batch is written in a config (benchmarks, restated recipes).

    Example: `base_learning_rate_for(0.1, 32, "sgd")` -> 0.8.
    """
    if _batch_scaling(optimizer) == "linear":
        return peak * REFERENCE_BATCH / global_batch_size
    return peak / math.sqrt(global_batch_size / float(REFERENCE_BATCH))


def describe_learning_rate(base_per_256: float, global_batch_size: int, optimizer: str) -> str:
    """One log phrase for a learning rate: the effective peak and where it comes from.

    Example: `describe_learning_rate(0.1, 32, "sgd")` ->
    "0.0125 (base 0.1 per 256 images, batch 32, sgd linear)".
    """
    peak = peak_learning_rate(base_per_256, global_batch_size, optimizer)
    return (
        f"{peak:.6g} (base {base_per_256:g} per {REFERENCE_BATCH} images, batch "
        f"{global_batch_size}, {optimizer} {_batch_scaling(optimizer)})"
    )


def _f(step: tf.Tensor) -> tf.Tensor:
    return tf.cast(step, tf.float32)


def warmup_cosine(
    peak: float, warmup_steps: int, total_steps: int, start_step: int = 0, final: float = 0.0
) -> Schedule:
    """Linear warmup from 0 to `peak` over `warmup_steps`, then cosine decay to `final` at
    `start_step + total_steps`. Steps before `start_step` count as 0 (phases start mid-run)."""

    @tf.autograph.experimental.do_not_convert  # tf ops only; train_steps' AutoGraph skips it
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

    @tf.autograph.experimental.do_not_convert  # tf ops only; train_steps' AutoGraph skips it
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
    """The pretraining schedule: peak LR = `peak_learning_rate(base_learning_rate,
    global_batch_size, optimizer)` (x B/256 for sgd/lars, x sqrt(B/256) for adam/adamw), warmup
    `warmup_epochs` (capped at `total_steps`, with a warning, as transfer phases cap theirs), then
    `lr_schedule` (cosine to 0 at `total_steps`, step decay at `step_decay_epochs` by
    `step_decay_rate`, or constant)."""
    peak = peak_learning_rate(
        train_cfg.base_learning_rate, train_cfg.global_batch_size, train_cfg.optimizer
    )
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
