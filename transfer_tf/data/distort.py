"""Per-image training distortions after the crop: random rotation and colour jitter.

The classic recipe is resize, random crop, flip, random rotation, colour (`augment.py` does the
first three in one fused decode). These functions take and return one uint8 image `[H, W, 3]`
and an explicit stateless seed (int32/int64 `[2]`): same image and seed, same output, on the
graph inside a `tf.data` map. They are built from TensorFlow's own image ops (the projective
transform behind Keras' `RandomRotation`, `tf.image` colour ops), not hand-written kernels.

`color_jitter` is meant to be composed: the SimCLR-style two-view pipeline calls it with its own
strengths, seeds and op definitions (`ops`: the papers' `tf.image` ops; the supervised
`data.color_jitter` keeps torchvision's) and may add grayscale and blur next to it.

Example:
    image = random_rotation(image, seed=tf.constant([3, 4]), max_degrees=15.0)
    image = color_jitter(image, tf.constant([5, 6]), brightness=0.4, contrast=0.4,
                         saturation=0.4, hue=0.1)  # uint8 [H, W, 3]
"""

from __future__ import annotations

import math

import tensorflow as tf

# Sub-seed tags: `distort_for_train` folds these into the record's seed, so switching rotation
# or colour on never changes the crop and flip (drawn from the record's seed by `augment.py`).
_ROTATION_STREAM = 0x0207
_COLOR_STREAM = 0xC010


def _to_unit(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32) * (1.0 / 255.0)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    # +0.5-then-truncate rounds; the clip keeps brightness/contrast overshoot from wrapping.
    return tf.cast(tf.clip_by_value(image, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)


def rotate(image: tf.Tensor, angle: tf.Tensor, fill_mode: str = "REFLECT") -> tf.Tensor:
    """Rotates uint8 `[H, W, 3]` counterclockwise by `angle` (float32 scalar, radians) about its
    centre, bilinear; returns uint8 `[H, W, 3]`.

    Pixels that come from outside the image are filled by `fill_mode` (`REFLECT`, the default of
    Keras' `RandomRotation`: no black corners whose shape gives the angle away; or `CONSTANT`
    black, `NEAREST`, `WRAP`). The output keeps the input's size.
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # The transform maps each output pixel (x, y) to the input point it samples (Keras' formula).
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])[None]
    turned = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=tf.cast(transform, tf.float32),
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )[0]
    # Bilinear weights are convex: values stay within 0..255, so rounding needs no clip.
    return tf.ensure_shape(tf.cast(turned + 0.5, tf.uint8), image.shape)


def random_rotation(image: tf.Tensor, seed: tf.Tensor, max_degrees: float) -> tf.Tensor:
    """uint8 `[H, W, 3]` rotated by an angle drawn uniformly from [-max_degrees, max_degrees]
    (stateless `seed` int [2]); uint8 `[H, W, 3]` out, same size."""
    limit = max_degrees * math.pi / 180.0
    angle = tf.random.stateless_uniform([], seed, -limit, limit)
    return rotate(image, angle)


# What contrast, saturation and brightness mean (`color_jitter`'s `ops`); hue is always
# `tf.image.adjust_hue`. Each op's output is clipped to [0, 1], as all three references do.
#   torchvision  contrast and saturation blend toward the grey mean / the grayscale image
#                (torchvision's definitions; `data.color_jitter`); brightness multiplies.
#   simclr       `tf.image.adjust_contrast` (each channel about its own mean) and
#                `tf.image.adjust_saturation` (HSV); brightness multiplies (SimCLR v2's data_util).
#   byol         as simclr, but brightness adds a delta (BYOL's augmentations.py).
JITTER_OPS = ("torchvision", "simclr", "byol")
_OPS = ("brightness", "contrast", "saturation", "hue")


def adjust_color(
    image: tf.Tensor, op: str, amount: tf.Tensor, ops: str = "torchvision"
) -> tf.Tensor:
    """One colour op with a given amount, float32 `[H, W, 3]` in [0, 1] -> the same, clipped.

    Args:
      op: brightness | contrast | saturation | hue.
      amount: float32 scalar: the factor (1 = unchanged), or the delta for hue and for byol's
        additive brightness (0 = unchanged; hue in turns of the colour circle).
      ops: which definitions (`JITTER_OPS`).
    """
    if op == "brightness":
        out = image + amount if ops == "byol" else image * amount
    elif op == "hue":
        out = tf.image.adjust_hue(image, amount)
    elif ops == "torchvision":
        # torchvision's _blend: f * image + (1 - f) * degenerate.
        grey = tf.image.rgb_to_grayscale(image)
        degenerate = tf.reduce_mean(grey) if op == "contrast" else grey
        out = degenerate + amount * (image - degenerate)
    elif op == "contrast":
        out = tf.image.adjust_contrast(image, amount)
    else:
        out = tf.image.adjust_saturation(image, amount)
    return tf.clip_by_value(out, 0.0, 1.0)


def color_jitter(
    image: tf.Tensor,
    seed: tf.Tensor,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    ops: str = "torchvision",
) -> tf.Tensor:
    """Colour jitter of uint8 `[H, W, 3]` -> uint8 `[H, W, 3]` (`adjust_color` per op).

    In this fixed order, each only when its strength is > 0 (as Model Garden applies them):
    brightness, contrast, saturation, hue. Factors are drawn from [max(0, 1 - s), 1 + s], the
    deltas of hue and of `ops="byol"`'s brightness from [-s, s] (hue <= 0.5 of a turn), each
    from its own sub-seed of `seed` (int32/int64 [2]), the same draws whatever `ops`. `ops`
    (`JITTER_OPS`) picks the definitions: `torchvision` (the supervised `data.color_jitter`;
    its grayscale blend costs a third of `tf.image.adjust_saturation`'s HSV round trip) or the
    SSL papers' `simclr` / `byol`. The work is done once in float32 [0, 1].
    """
    if ops not in JITTER_OPS:
        raise ValueError(f"color_jitter ops {ops!r}: expected one of {', '.join(JITTER_OPS)}")
    strengths = (brightness, contrast, saturation, hue)
    if not any(s > 0 for s in strengths):
        return image
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    out = _to_unit(image)
    for k, (op, s) in enumerate(zip(_OPS, strengths, strict=True)):
        if s <= 0:
            continue
        if op == "hue" or (op == "brightness" and ops == "byol"):
            amount = tf.random.stateless_uniform([], seeds[k], -s, s)
        else:
            amount = tf.random.stateless_uniform([], seeds[k], max(0.0, 1.0 - s), 1.0 + s)
        out = adjust_color(out, op, amount, ops)
    return tf.ensure_shape(_to_uint8(out), image.shape)


def distort_for_train(
    image: tf.Tensor,
    seed: tf.Tensor,
    rotation_degrees: float = 0.0,
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> tf.Tensor:
    """Random rotation then colour jitter (each only when on) of a training crop.

    Args:
      image: uint8 `[S, S, 3]` (the crop); seed: the record's stateless seed (int [2]), the one
        the crop was drawn from: rotation and colour use sub-seeds folded from it, so they change
        nothing else.
      rotation_degrees: max absolute angle (`data.random_rotation_degrees`); 0 = off.
      jitter: `(brightness, contrast, saturation, hue)` strengths (`data.color_jitter`).
    Returns:
      uint8 `[S, S, 3]`.
    """
    seed = tf.cast(seed, tf.int64)
    if rotation_degrees > 0:
        rotation_seed = tf.random.experimental.stateless_fold_in(seed, _ROTATION_STREAM)
        image = random_rotation(image, rotation_seed, rotation_degrees)
    if any(s > 0 for s in jitter):
        color_seed = tf.random.experimental.stateless_fold_in(seed, _COLOR_STREAM)
        image = color_jitter(image, color_seed, *jitter)
    return image
