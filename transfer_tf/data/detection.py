"""Detection inputs: decoded COCO tensors -> `(image uint8 [S, S, 3], targets)`, on the graph.

The detection side of the Decoder/Parser split (`parsers.py` is the classification side): it
takes what `decoders.CocoDecoder` (or a Model Garden `create_coco_tf_record` shard, the same schema)
gives and knows no model (no anchors: the objective assigns those).

Geometry (S = detection.image_size): the image is resized keeping its aspect ratio so that its
long side is S x f and padded bottom/right with zeros to S x S. Evaluation and serving use f = 1
(`resize_and_pad`, through `preprocess_detection_eval`, the ONE eval preprocessing function the
export's serving graph also calls). Training draws f uniformly from detection.scale_jitter (the
recipe's: Model Garden's aug_scale_min/max 0.8-1.2, keras-cv's JitteredResize 0.8-1.25) and, where
the resized image exceeds S, a random S x S crop of it, as Model Garden's resize_and_crop_image;
it first flips image and boxes left-right with probability 1/2 (data.random_flip).

Targets:
* train  {"boxes": float32 [M, 4] yxyx pixels of the S x S input (padding -1),
          "classes": float32 [M] contiguous class indices (padding -1)}, M = detection.max_boxes.
         Crowd annotations are left out, and so are boxes cropped away entirely.
* eval   {"image_scale": float32 [2] (input pixels per original pixel, y and x),
          "image_hw": int32 [2] original height/width,
          "gt_boxes": float32 [M, 4] yxyx ORIGINAL pixels, "gt_classes": int32 [M] indices (-1 pad),
          "gt_is_crowd": int32 [M], "gt_area": float32 [M] (annotation area, else box area)}:
         everything COCOeval needs, crowds included (COCOeval ignores detections on them).
Category ids become contiguous indices through the label map; an id missing from it fails the
parse (bad data, reported with its shard like the classification parser's labels).

Example:
    parser = DetectionParser(cfg.data, cfg.detection, training=True, label_map=label_map)
    image, targets = parser(decoder.decode(serialized), seed=tf.constant([1, 2], tf.int64))
"""

from __future__ import annotations

import tensorflow as tf

from transfer_tf.config import DataConfig, DetectionConfig
from transfer_tf.data.image_limits import check_pixels, header_hw
from transfer_tf.data.label_maps import LabelMap, lookup_table


def resize_and_pad(
    image: tf.Tensor,
    size: int,
    factor: tf.Tensor | float = 1.0,
    offset_fraction: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Aspect-preserving resize so the long side is `size * factor`, an optional crop of the part
    beyond `size` (`offset_fraction` float32 [2] in [0, 1) of the excess, top/left), zero padding
    bottom/right to `size` x `size`.

    Args:
      image: uint8 (or float) `[H, W, 3]`.
    Returns:
      (uint8 `[size, size, 3]`, scale float32 [2]: resized pixels per original pixel in y and x,
      offset float32 [2]: the crop's top-left corner in resized pixels).
    """
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    target = tf.cast(size, tf.float32) * tf.cast(factor, tf.float32)
    scaled = tf.maximum(tf.round(hw * tf.reduce_min(target / hw)), 1.0)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.cast(scaled, tf.int32))
    offset = tf.zeros([2], tf.float32)
    if offset_fraction is not None:
        offset = tf.floor(tf.maximum(scaled - float(size), 0.0) * offset_fraction)
    top_left = tf.cast(offset, tf.int32)
    cropped = resized[top_left[0] : top_left[0] + size, top_left[1] : top_left[1] + size]
    padded = tf.image.pad_to_bounding_box(cropped, 0, 0, size, size)
    # Bilinear weights are convex, so values stay in 0..255: +0.5 then truncation rounds.
    return tf.cast(padded + 0.5, tf.uint8), scaled / hw, offset


def resize_and_pad_batch(images: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`resize_and_pad` of each image of a decoded uint8 batch `[B, H, W, 3]` (the serving
    signatures' image tensors). Returns (uint8 `[B, size, size, 3]`, scale float32 `[B, 2]`,
    the original image_hw int32 `[B, 2]`: one H, W for the whole batch)."""
    resized, scale, _ = tf.map_fn(
        lambda im: resize_and_pad(im, size),
        images,
        fn_output_signature=(
            tf.TensorSpec([size, size, 3], tf.uint8),
            tf.TensorSpec([2], tf.float32),
            tf.TensorSpec([2], tf.float32),
        ),
    )
    hw = tf.tile(tf.shape(images)[1:3][None, :], [tf.shape(images)[0], 1])
    return resized, scale, hw


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF (first frame)/BMP -> uint8 `[H, W, 3]` (grayscale/RGBA become RGB)."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def preprocess_detection_eval(
    image_bytes: tf.Tensor, size: int, max_pixels: int = 0
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """THE eval/serving preprocessing of detection: encoded bytes (scalar string) ->
    (uint8 `[size, size, 3]`, scale float32 [2] (input pixels per original pixel, y and x),
    original height/width int32 [2]). A box in input pixels is `box / [sy, sx, sy, sx]` in
    original pixels. `max_pixels` > 0 (serving): refuse a larger image, from its header, before
    decoding (`image_limits.check_pixels`).

    Example:
        image, scale, hw = preprocess_detection_eval(tf.io.read_file("street.jpg"), 640)
    """
    # The eval pipeline (max_pixels 0) reads no header: nothing per record.
    check = check_pixels(header_hw(image_bytes), max_pixels) if max_pixels > 0 else None
    with tf.control_dependencies([check] if check is not None else []):
        image = decode_rgb(image_bytes)
    resized, scale, _ = resize_and_pad(image, size)
    return resized, scale, tf.shape(image)[:2]


def flip_boxes_left_right(boxes: tf.Tensor) -> tf.Tensor:
    """Normalised yxyx boxes float32 [N, 4] of an image mirrored left-right (x -> 1 - x)."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def pad_to(values: tf.Tensor, length: int, pad_value: float) -> tf.Tensor:
    """The first `length` rows of `values` ([N, ...]), padded with `pad_value` to exactly `length`."""
    values = values[:length]
    pad = length - tf.shape(values)[0]
    paddings = [[0, pad]] + [[0, 0]] * (len(values.shape) - 1)
    out = tf.pad(values, paddings, constant_values=tf.cast(pad_value, values.dtype))
    return tf.ensure_shape(out, [length, *values.shape[1:]])


class DetectionParser:
    """Decoded COCO tensors -> detection model inputs for one split (see module doc).

    Args:
      data_cfg: the data section (random_flip; num_classes for the label check).
      det_cfg: the detection section (image_size, max_boxes, scale_jitter).
      training: the train geometry and targets (True) or the eval ones (False).
      label_map: COCO category id -> index; None when the stored classes already are indices.
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        det_cfg: DetectionConfig,
        *,
        training: bool,
        label_map: LabelMap | None = None,
    ) -> None:
        self.data_cfg = data_cfg
        self.det_cfg = det_cfg
        self.training = training
        self.num_classes = data_cfg.num_classes
        self._table = lookup_table(label_map) if label_map is not None else None

    def class_indices(self, classes: tf.Tensor) -> tf.Tensor:
        """Raw category ids int [N] -> contiguous indices int64 [N]; fails on an unknown id."""
        classes = tf.cast(classes, tf.int64)
        indices = self._table.lookup(classes) if self._table is not None else classes
        tf.debugging.assert_equal(
            tf.reduce_all((indices >= 0) & (indices < self.num_classes)),
            True,
            message="COCO category id not in the label map (or index >= data.num_classes)",
        )
        return indices

    def validate(self, tensors: dict[str, tf.Tensor]) -> tf.Tensor:
        """Fails wherever `__call__` can fail on `tensors` (the corrupt-data post-mortem's check,
        `guard.corrupt_data_error`); returns the decoded image's shape int32 [3]."""
        checked = self.class_indices(tensors["classes"])
        with tf.control_dependencies([checked]):
            return tf.shape(decode_rgb(tensors["image"]))

    def dummy(self) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Zero outputs of `__call__`'s structure (what skip mode yields for a skipped record)."""
        size, m = self.det_cfg.image_size, self.det_cfg.max_boxes
        image = tf.zeros([size, size, 3], tf.uint8)
        if self.training:
            return image, {"boxes": -tf.ones([m, 4]), "classes": -tf.ones([m])}
        return image, {
            "image_scale": tf.ones([2]),
            "image_hw": tf.ones([2], tf.int32),
            "gt_boxes": -tf.ones([m, 4]),
            "gt_classes": -tf.ones([m], tf.int32),
            "gt_is_crowd": tf.zeros([m], tf.int32),
            "gt_area": tf.zeros([m]),
        }

    def __call__(
        self, tensors: dict[str, tf.Tensor], seed: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """`(image uint8 [S, S, 3], targets)` (see module doc); `seed` int [2] (stateless)."""
        indices = self.class_indices(tensors["classes"])
        boxes = tf.clip_by_value(tf.reshape(tf.cast(tensors["boxes"], tf.float32), [-1, 4]), 0, 1)
        if self.training:
            image = decode_rgb(tensors["image"])
            return self._train(image, boxes, indices, tensors["is_crowd"], seed)
        return self._eval(boxes, indices, tensors)

    def _train(self, image, boxes, indices, is_crowd, seed):
        size = self.det_cfg.image_size
        flip_seed, scale_seed, crop_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        )
        # Crowd regions are not objects to regress to (Model Garden's skip_crowd_during_training).
        keep = tf.equal(tf.cast(is_crowd, tf.int64), 0)
        boxes, indices = tf.boolean_mask(boxes, keep), tf.boolean_mask(indices, keep)
        if self.data_cfg.random_flip:
            flip = tf.random.stateless_uniform([], flip_seed) < 0.5
            image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
            boxes = tf.cond(flip, lambda: flip_boxes_left_right(boxes), lambda: boxes)
        lo, hi = self.det_cfg.scale_jitter
        factor = tf.random.stateless_uniform([], scale_seed, lo, hi)
        crop = tf.random.stateless_uniform([2], crop_seed)
        original_hw = tf.cast(tf.shape(image)[:2], tf.float32)
        image, scale, offset = resize_and_pad(image, size, factor, crop)
        # Normalised -> pixels of the resized image -> pixels of the crop.
        pixels = boxes * tf.tile(original_hw * scale, [2]) - tf.tile(offset, [2])
        pixels = tf.clip_by_value(pixels, 0.0, float(size))
        # A box cropped away entirely (or to a line) is no target.
        visible = (pixels[:, 2] > pixels[:, 0]) & (pixels[:, 3] > pixels[:, 1])
        pixels, indices = tf.boolean_mask(pixels, visible), tf.boolean_mask(indices, visible)
        m = self.det_cfg.max_boxes
        return image, {
            "boxes": pad_to(pixels, m, -1.0),
            "classes": pad_to(tf.cast(indices, tf.float32), m, -1.0),
        }

    def _eval(self, boxes, indices, tensors):
        size, m = self.det_cfg.image_size, self.det_cfg.max_boxes
        # The one eval preprocessing, as the export's serving graph runs it.
        resized, scale, hw = preprocess_detection_eval(tensors["image"], size)
        pixels = boxes * tf.tile(tf.cast(hw, tf.float32), [2])
        box_area = (pixels[:, 2] - pixels[:, 0]) * (pixels[:, 3] - pixels[:, 1])
        area = tf.cast(tensors["area"], tf.float32)
        return resized, {
            "image_scale": scale,
            "image_hw": hw,
            "gt_boxes": pad_to(pixels, m, -1.0),
            "gt_classes": pad_to(tf.cast(indices, tf.int32), m, -1),
            "gt_is_crowd": pad_to(tf.cast(tensors["is_crowd"], tf.int32), m, 0),
            "gt_area": pad_to(tf.where(area > 0, area, box_area), m, 0.0),
        }
