"""Batch-level augmentation: MixUp and CutMix with soft labels (stateless, seeded per batch).

Both pair every example with the batch in reverse order (no gather, and every example gets a
partner) and draw one mixing ratio per batch (timm's "batch" mode). Images stay uint8; labels
become soft float32 vectors. When both are enabled each batch uses one of them, chosen with
probability 1/2.

Example:
    images, labels = mix_batch(images, labels, seed=tf.constant([0, 3]), mixup_alpha=0.2)
"""

from __future__ import annotations

import tensorflow as tf


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """One Beta(alpha, alpha) sample as a ratio of two stateless Gamma samples."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    a = tf.random.stateless_gamma([], s1, alpha)
    b = tf.random.stateless_gamma([], s2, alpha)
    return a / tf.maximum(a + b, 1e-12)


def mixup(
    images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """MixUp: `lam * x + (1 - lam) * x[::-1]` on uint8 `[B, H, W, C]` and float32 `[B, K]` labels."""
    lam = _beta(seed, alpha)
    x = tf.cast(images, tf.float32)
    mixed = lam * x + (1.0 - lam) * tf.reverse(x, [0])
    images = tf.cast(tf.clip_by_value(mixed + 0.5, 0.0, 255.0), images.dtype)
    return images, lam * labels + (1.0 - lam) * tf.reverse(labels, [0])


def cutmix(
    images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix: paste a box of area `(1 - lam)` from the reversed batch; labels by actual box area."""
    lam_seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    lam = _beta(lam_seed, alpha)
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    cut = tf.sqrt(1.0 - lam)
    center = tf.random.stateless_uniform([2], pos_seed) * tf.stack([hf, wf])
    y0 = tf.cast(tf.clip_by_value(center[0] - cut * hf / 2, 0.0, hf), tf.int32)
    y1 = tf.cast(tf.clip_by_value(center[0] + cut * hf / 2, 0.0, hf), tf.int32)
    x0 = tf.cast(tf.clip_by_value(center[1] - cut * wf / 2, 0.0, wf), tf.int32)
    x1 = tf.cast(tf.clip_by_value(center[1] + cut * wf / 2, 0.0, wf), tf.int32)
    rows = tf.range(h)
    cols = tf.range(w)
    inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    images = tf.where(inside[None, :, :, None], tf.reverse(images, [0]), images)
    area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (hf * wf)
    return images, (1.0 - area) * labels + area * tf.reverse(labels, [0])


def mix_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Applies MixUp and/or CutMix (alpha 0 = off) to one batch; identity when both are off."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, labels
    if cutmix_alpha <= 0:
        return mixup(images, labels, seed, mixup_alpha)
    if mixup_alpha <= 0:
        return cutmix(images, labels, seed, cutmix_alpha)
    choice_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    use_cutmix = tf.random.stateless_uniform([], choice_seed) < 0.5
    return tf.cond(
        use_cutmix,
        lambda: cutmix(images, labels, mix_seed, cutmix_alpha),
        lambda: mixup(images, labels, mix_seed, mixup_alpha),
    )
