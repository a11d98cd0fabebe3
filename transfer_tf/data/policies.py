"""RandAugment / AutoAugment-style colour and geometry policies (keras-cv layers), on batches.

keras-cv 0.9's layers run inside `tf.data.map` with Keras 3 (see DESIGN.md). They draw from
stateful generators (seeded with `seed` where the layer takes one, else TF's global generator),
and apply per image in a `tf.map_fn` whose iterations run concurrently, so the draws land on the
images in a varying order: policy output is NOT bit-reproducible, even in a deterministic run
(crops, flips and MixUp/CutMix are; tested). Runs with a policy are reproducible in distribution
only.

* `randaugment`: `keras_cv.layers.RandAugment` (`randaugment_layers` ops per image at
  `randaugment_magnitude` in [0, 1]).
* `autoaugment`: AutoAugment-style — two ops per image drawn uniformly from AutoAugment's ImageNet
  op set (auto-contrast, equalize, solarize, posterize, rotate, shear, colour, contrast,
  brightness, sharpness). It is not the learned sub-policy table.

Example:
    policy = make_policy(cfg.data, seed=0)   # None when augment_policy == "none"
    images = policy(images)                  # uint8 [B, S, S, 3] -> uint8 [B, S, S, 3]
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from transfer_tf.config import DataConfig


def _layers(cfg: DataConfig, seed: int):
    import keras_cv  # heavy import: only when a policy is requested

    value_range = (0, 255)
    if cfg.augment_policy == "randaugment":
        return keras_cv.layers.RandAugment(
            value_range=value_range,
            augmentations_per_image=cfg.randaugment_layers,
            magnitude=cfg.randaugment_magnitude,
            seed=seed,
        )
    ops = [
        keras_cv.layers.AutoContrast(value_range=value_range),
        keras_cv.layers.Equalization(value_range=value_range),
        keras_cv.layers.Solarization(value_range=value_range, threshold_factor=(0, 255), seed=seed),
        keras_cv.layers.Posterization(value_range=value_range, bits=4),
        keras_cv.layers.RandomRotation(factor=30.0 / 360.0, seed=seed),
        keras_cv.layers.RandomShear(x_factor=0.3, y_factor=0.3, seed=seed),
        keras_cv.layers.RandomColorDegeneration(factor=0.9, seed=seed),
        keras_cv.layers.RandomContrast(value_range=value_range, factor=0.9, seed=seed),
        keras_cv.layers.RandomBrightness(factor=0.3, value_range=value_range, seed=seed),
        keras_cv.layers.RandomSharpness(factor=0.9, value_range=value_range, seed=seed),
    ]
    return keras_cv.layers.RandomAugmentationPipeline(
        layers=ops, augmentations_per_image=2, seed=seed
    )


def make_policy(cfg: DataConfig, seed: int = 0) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """Returns `images uint8 [B, H, W, 3] -> uint8 [B, H, W, 3]`, or None for `augment_policy: none`."""
    if cfg.augment_policy == "none":
        return None
    layer = _layers(cfg, seed)

    def apply(images: tf.Tensor) -> tf.Tensor:
        out = layer(tf.cast(images, tf.float32), training=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    return apply
