"""Image preprocessing on the TensorFlow graph: training augmentation and evaluation crops.

`preprocess_for_eval` is the single definition of evaluation preprocessing: the input pipeline's
eval mode and the exported serving signatures both call it, so there is no train/serve skew.
`preprocess_for_train` is the Inception-style random resized crop + flip + resize, optionally
followed by a random rotation and colour jitter (`distort.py`).

Images leave this module as uint8 `[size, size, 3]`; mean/std normalisation happens in the model's
first layer (4x less host memory traffic than shipping float32).

Randomness is stateless: every random function takes a `seed` (int32/int64 `[2]`), so a run is
reproducible bit-for-bit given the same seeds (the input pipeline derives them from `cfg.seed`
and the element's position in the stream).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from transfer_tf.data import distort
from transfer_tf.data.image_limits import check_pixels, non_jpeg_hw


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
    # ResizeBilinear reads float32 input ~15% faster than uint8 and computes the same values.
    resized = tf.image.resize(
        tf.cast(image, tf.float32), [image_size, image_size], method="bilinear", antialias=False
    )
    # Bilinear weights are convex, so values stay inside the input's 0..255: no clip needed, and
    # +0.5-then-truncate rounds in one pass (this runs once per training image).
    return tf.cast(resized + 0.5, tf.uint8)


def center_crop_and_resize(
    image: tf.Tensor, image_size: int, crop_fraction: float = 0.875
) -> tf.Tensor:
    """Eval preprocessing of a decoded uint8 image `[H, W, 3]` -> uint8 `[image_size, image_size, 3]`."""
    shape = tf.shape(image)
    window = center_crop_window(shape[0], shape[1], crop_fraction)
    cropped = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    return resize_to_uint8(cropped, image_size)


def preprocess_for_eval(
    image_bytes: tf.Tensor, image_size: int, crop_fraction: float = 0.875, max_pixels: int = 0
) -> tf.Tensor:
    """Eval preprocessing of encoded image bytes (scalar string) -> uint8 `[image_size, image_size, 3]`.

    JPEGs go through the fused `decode_and_crop_jpeg` (only the crop window is decoded), at the
    largest 1/2, 1/4 or 1/8 scale that keeps the window at least `image_size` (the rule training
    decodes by, `decode_jpeg_window`): a 10,000 x 10,000 photo for a 224 px model decodes ~1,100
    px, not 100 megapixels. PNG, GIF (first frame), BMP and WebP are decoded whole and cropped.
    Either way the crop is the same centered square. Grayscale and RGBA inputs become RGB.

    Args:
      max_pixels: refuse (InvalidArgumentError naming the size and `export.max_image_pixels`) an
        image of more pixels, read from its header before anything is decoded (formats whose
        header is not read: after decoding). 0: no limit (the input pipeline; the builders
        already rejected such images). The serving signatures pass the export's limit.

    Example:
        image = preprocess_for_eval(tf.io.read_file("cat.jpg"), image_size=224)  # uint8 [224,224,3]
    """

    def checked(hw: Callable[[], tf.Tensor]):
        # Without a limit (the input pipeline) no header is read: nothing added per record.
        op = check_pixels(hw(), max_pixels) if max_pixels > 0 else None
        return tf.control_dependencies([op] if op is not None else [])

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(image_bytes)
        with checked(lambda: shape):
            window = center_crop_window(shape[0], shape[1], crop_fraction)
            # libjpeg's default IDCT (dct_method ""), as eval always decoded.
            return decode_jpeg_window(image_bytes, window, min_size=image_size, dct_method="")

    def other() -> tf.Tensor:
        with checked(lambda: non_jpeg_hw(image_bytes)):
            image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        shape = tf.shape(image)
        with checked(lambda: shape):  # formats whose header non_jpeg_hw cannot read
            window = center_crop_window(shape[0], shape[1], crop_fraction)
            return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([None, None, 3])
    return resize_to_uint8(image, image_size)


# ----------------------------------------------------------------------------------------------
# Training: Inception-style random resized crop through the fused JPEG decode-and-crop.
# ----------------------------------------------------------------------------------------------

_DECODE_RATIOS = (1, 2, 4, 8)


def sample_crop_window(
    image_shape: tf.Tensor,
    seed: tf.Tensor,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (0.75, 4.0 / 3.0),
    boxes: tf.Tensor | None = None,
    min_object_covered: float = 0.1,
    max_attempts: int = 10,
    fallback_fraction: float = 0.875,
) -> tf.Tensor:
    """Samples an Inception-style crop `[offset_y, offset_x, height, width]` (int32 [4]).

    The crop covers `area_range` of the image with width/height in `aspect_range`, drawn with
    `stateless_sample_distorted_bounding_box` (`max_attempts` tries). When every try fails, TF
    returns the whole image; we then use the centered eval crop (`fallback_fraction` of the short
    side), as the Inception/Model Garden recipes do.

    Args:
      image_shape: int [2] or [3] (height, width[, channels]).
      seed: int32/int64 [2] stateless seed.
      boxes: optional float32 [N, 4] normalised yxyx object boxes: the crop must then contain at
        least `min_object_covered` of one of them (COCO: keeps an object in view). None or N == 0:
        the whole image is the reference box, as in ImageNet training.
    """
    shape = tf.cast(image_shape[:2], tf.int32)
    if boxes is None:
        boxes = tf.zeros([0, 4], tf.float32)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [1, -1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [3]], 0),
        bounding_boxes=boxes,
        seed=seed,
        min_object_covered=min_object_covered,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.concat([begin[:2], size[:2]], 0)
    failed = tf.reduce_all(tf.equal(size[:2], shape))
    return tf.where(failed, center_crop_window(shape[0], shape[1], fallback_fraction), window)


def _decode_ratio_index(window: tf.Tensor, min_size: int) -> tf.Tensor:
    """Index into `_DECODE_RATIOS`: the largest 1/ratio scale keeping `window` >= `min_size`."""
    if min_size <= 0:
        return tf.constant(0, tf.int32)
    short = tf.minimum(window[2], window[3])
    return tf.add_n([tf.cast(short // r >= min_size, tf.int32) for r in _DECODE_RATIOS[1:]])


def _decode_window_at(
    image_bytes: tf.Tensor, window: tf.Tensor, ratio: int, dct_method: str
) -> tf.Tensor:
    # decode_and_crop_jpeg takes its window in the scaled image's coordinates.
    return tf.io.decode_and_crop_jpeg(
        image_bytes, window // ratio, channels=3, ratio=ratio, dct_method=dct_method
    )


def decode_jpeg_window(
    image_bytes: tf.Tensor,
    window: tf.Tensor,
    min_size: int = 0,
    dct_method: str = "INTEGER_FAST",
) -> tf.Tensor:
    """Decodes only `window` (`[y, x, h, w]`) of a JPEG -> uint8 `[h', w', 3]`.

    When `min_size` > 0 and the window is at least 2x/4x/8x `min_size` on its short side, libjpeg
    decodes at 1/2, 1/4 or 1/8 scale (the IDCT does the downscaling, far cheaper than decoding
    every pixel and resizing them away). The result is then `window / ratio` pixels, never smaller
    than `min_size`, so the final resize still only shrinks. `decode_and_crop_jpeg` takes its
    window in scaled coordinates, hence the division.
    """
    window = tf.cast(window, tf.int32)

    def branch(ratio: int):
        return lambda: _decode_window_at(image_bytes, window, ratio, dct_method)

    if min_size <= 0:
        return branch(1)()
    image = tf.switch_case(
        _decode_ratio_index(window, min_size), [branch(r) for r in _DECODE_RATIOS]
    )
    image.set_shape([None, None, 3])
    return image


def resized_jpeg_crop(
    image_bytes: tf.Tensor,
    window: tf.Tensor,
    image_size: int,
    flip: tf.Tensor | bool = False,
    dct_method: str = "INTEGER_FAST",
) -> tf.Tensor:
    """JPEG bytes -> `window` decoded, resized to uint8 `[image_size, image_size, 3]`, mirrored
    left-right when `flip` (bool scalar).

    Same pixels as `resize_to_uint8(decode_jpeg_window(bytes, window, image_size))` followed by
    an optional `tf.reverse`, but the decode scale and the flip are chosen by one `switch_case`:
    each `tf.cond`/`switch_case` in a tf.data map costs ~30-50 us per image (a branch function
    call), which is ~5% of the whole per-image cost once decode and resize are as cheap as TF
    makes them.

    Example:
        image = resized_jpeg_crop(jpeg_bytes, tf.constant([10, 20, 300, 280]), 224, flip=True)
    """
    window = tf.cast(window, tf.int32)
    index = _decode_ratio_index(window, image_size) * 2 + tf.cast(flip, tf.int32)

    def branch(ratio: int, mirrored: bool):
        def decode_resize():
            image = resize_to_uint8(
                _decode_window_at(image_bytes, window, ratio, dct_method), image_size
            )
            return tf.reverse(image, [1]) if mirrored else image

        return decode_resize

    image = tf.switch_case(index, [branch(r, m) for r in _DECODE_RATIOS for m in (False, True)])
    image.set_shape([image_size, image_size, 3])
    return image


def random_resized_crop(
    image_bytes: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    *,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (0.75, 4.0 / 3.0),
    flip: bool = True,
    boxes: tf.Tensor | None = None,
    min_object_covered: float = 0.1,
    fallback_fraction: float = 0.875,
    dct_method: str = "INTEGER_FAST",
    jpeg_only: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Inception-style random resized crop + random flip of encoded image bytes.

    JPEGs go through the fused decode-and-crop (only the window is decoded, at a reduced scale
    when it is >= 2x the output; see `resized_jpeg_crop`). Unless `jpeg_only`, PNG/GIF/BMP (TFDS,
    foreign shards) are decoded whole and cropped with the same window distribution; with
    `jpeg_only` (our TFRecord schemas, which hold JPEG) that check is skipped and anything else
    fails to decode.

    Args:
      seed: int32/int64 [2]; split into a crop seed and a flip seed. Same seed, same output.
      boxes, min_object_covered: see `sample_crop_window` (COCO keeps an object in view).
    Returns:
      (image uint8 [image_size, image_size, 3], window int32 [4] `[y, x, h, w]` in original
       pixels, image_hw int32 [2] original height and width).
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    # A left-right flip with probability 1/2, drawn once for either decode path.
    mirrored = tf.random.stateless_uniform([], flip_seed) < 0.5 if flip else tf.constant(False)

    def window_for(shape: tf.Tensor) -> tf.Tensor:
        return sample_crop_window(
            shape,
            crop_seed,
            area_range,
            aspect_range,
            boxes=boxes,
            min_object_covered=min_object_covered,
            fallback_fraction=fallback_fraction,
        )

    def jpeg():
        shape = tf.io.extract_jpeg_shape(image_bytes, output_type=tf.int32)[:2]
        window = window_for(shape)
        return (
            resized_jpeg_crop(image_bytes, window, image_size, mirrored, dct_method),
            window,
            shape,
        )

    def other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        shape = tf.shape(image)[:2]
        window = window_for(shape)
        crop = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
        image = resize_to_uint8(crop, image_size)
        image = tf.cond(mirrored, lambda: tf.reverse(image, [1]), lambda: image)
        return image, window, shape

    if jpeg_only:
        return jpeg()
    image, window, shape = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([image_size, image_size, 3])
    return image, window, shape


def preprocess_for_train(
    image_bytes: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (0.75, 4.0 / 3.0),
    flip: bool = True,
    fallback_fraction: float = 0.875,
    dct_method: str = "INTEGER_FAST",
    jpeg_only: bool = False,
    rotation_degrees: float = 0.0,
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> tf.Tensor:
    """Inception-style training preprocessing: bytes -> uint8 `[image_size, image_size, 3]`.

    Random resized crop (area 0.08-1, aspect 3/4-4/3, 10 attempts, center-crop fallback), random
    horizontal flip, bilinear resize; then, when on, a random rotation of up to
    +-`rotation_degrees` and colour jitter `(brightness, contrast, saturation, hue)` (see
    `distort.distort_for_train`: sub-seeds of `seed`, so they leave the crop unchanged). Same
    seed, same output.

    Example:
        image = preprocess_for_train(jpeg_bytes, 224, seed=tf.constant([0, 7]))  # uint8 [224,224,3]
    """
    image, _, _ = random_resized_crop(
        image_bytes,
        image_size,
        seed,
        area_range=area_range,
        aspect_range=aspect_range,
        flip=flip,
        fallback_fraction=fallback_fraction,
        dct_method=dct_method,
        jpeg_only=jpeg_only,
    )
    return distort.distort_for_train(image, seed, rotation_degrees, color_jitter)
