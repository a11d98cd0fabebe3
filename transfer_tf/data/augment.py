"""Image preprocessing on the TensorFlow graph: training augmentation and evaluation crops.

`preprocess_for_eval` is the single definition of evaluation preprocessing: the input pipeline's
eval mode and the exported serving signatures both call it, so there is no train/serve skew.

Images leave this module as uint8 `[size, size, 3]`; mean/std normalisation happens in the model's
first layer (4x less host memory traffic than shipping float32).
"""

from __future__ import annotations

import tensorflow as tf


def center_crop_window(height: tf.Tensor, width: tf.Tensor, crop_fraction: float) -> tf.Tensor:
    """Returns the centered square crop `[offset_y, offset_x, size, size]` (int32 [4]).

    The crop side is `crop_fraction` of the shorter image side (0.875 is the ResNet convention).
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    short = tf.minimum(height, width)
    size = tf.maximum(tf.cast(tf.cast(short, tf.float32) * crop_fraction, tf.int32), 1)
    offset_y = (height - size + 1) // 2
    offset_x = (width - size + 1) // 2
    return tf.stack([offset_y, offset_x, size, size])


def resize_to_uint8(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Bilinear resize of `[H, W, 3]` to `[image_size, image_size, 3]` uint8 (rounded, clipped)."""
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=False)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def center_crop_and_resize(
    image: tf.Tensor, image_size: int, crop_fraction: float = 0.875
) -> tf.Tensor:
    """Eval preprocessing of a decoded uint8 image `[H, W, 3]` -> uint8 `[image_size, image_size, 3]`."""
    shape = tf.shape(image)
    window = center_crop_window(shape[0], shape[1], crop_fraction)
    cropped = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    return resize_to_uint8(cropped, image_size)


def preprocess_for_eval(
    image_bytes: tf.Tensor, image_size: int, crop_fraction: float = 0.875
) -> tf.Tensor:
    """Eval preprocessing of encoded image bytes (scalar string) -> uint8 `[image_size, image_size, 3]`.

    JPEGs go through the fused `decode_and_crop_jpeg` (only the crop window is decoded); PNG, GIF
    (first frame) and BMP are decoded whole and cropped. Either way the crop is the same centered
    square, so the result depends only on the pixels. Grayscale and RGBA inputs become RGB.

    Example:
        image = preprocess_for_eval(tf.io.read_file("cat.jpg"), image_size=224)  # uint8 [224,224,3]
    """

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(image_bytes)
        window = center_crop_window(shape[0], shape[1], crop_fraction)
        return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other() -> tf.Tensor:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        shape = tf.shape(image)
        window = center_crop_window(shape[0], shape[1], crop_fraction)
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([None, None, 3])
    return resize_to_uint8(image, image_size)
