"""Segmentation inputs: a serialized Example -> `(image, class map)`, on the graph.

The segmentation side of the Decoder/Parser split (`detection.py` is detection's). It reads two
shard layouts (`segmentation.layout`):
  instance_masks  COCO shards of `make_coco_tfrecords --include_masks` (or Model Garden's
                  `create_coco_tf_record --include_masks`): one PNG {0, 1} mask per instance in
                  `image/object/mask`, beside `image/object/class/label` and `is_crowd`
                  (`SegmentationDecoder` returns them as they are; instance segmentation can
                  reuse it)
  semantic        Model Garden's semantic layout: `image/segmentation/class/encoded`, one PNG
                  class map per image (class indices, 255 ignore)
and makes one class map of the image's size (`class_map`): 0 = background, 1..K = classes
(settings.py says which), 255 = ignore: pixels covered by instances of two different classes,
crowd regions no other instance covers, and later the padding.

Geometry (S = segmentation.image_size): as detection's, long side to S x f, padding bottom/right
to S x S (image 0, labels 255). Images resize bilinearly, class maps by nearest neighbour, with the
same size, crop and flip. Evaluation and serving use f = 1 through `preprocess_segmentation_eval`
(the ONE eval preprocessing, which the export's serving graph calls); their class maps stay at the
ORIGINAL size (mIoU is measured there), padded with 255 to M x M (M =
segmentation.max_eval_size). Training draws f from segmentation.scale_jitter and takes a random
S x S crop where the resized image exceeds S; it first flips with probability 1/2
(data.random_flip).

Outputs:
  train  (uint8 [S, S, 3], uint8 [S, S] class map)
  eval   ({"images": uint8 [S, S, 3], "image_hw": int32 [2] original height/width},
          int32 [M, M] class map at the original size, padding 255)

Example:
    parser = SegmentationParser(cfg.data, cfg.segmentation, training=True, label_map=label_map)
    image, labels = parser(SegmentationDecoder().decode(serialized), seed=tf.constant([1, 2]))
"""

from __future__ import annotations

import tensorflow as tf

from transfer_tf.config import DataConfig
from transfer_tf.data import schemas
from transfer_tf.data.detection import decode_rgb, resize_and_pad
from transfer_tf.data.image_limits import check_pixels, header_hw
from transfer_tf.data.label_maps import LabelMap, lookup_table
from transfer_tf.segmentation.settings import (
    IGNORE_LABEL,
    VOC_COCO_IDS,
    SegmentationConfig,
)

SEMANTIC_ENCODED = "image/segmentation/class/encoded"  # Model Garden's semantic layout


class SegmentationDecoder:
    """Serialized Example -> {"image": bytes, "classes": int64 [N] raw category ids,
    "is_crowd": int64 [N], "masks": string [N] PNGs, "semantic": string scalar ("" if absent)}.
    Reads both layouts: the instance keys are empty in a semantic shard and the reverse."""

    features = {
        schemas.ENCODED: tf.io.FixedLenFeature((), tf.string),
        schemas.OBJECT_LABEL: tf.io.VarLenFeature(tf.int64),
        schemas.OBJECT_IS_CROWD: tf.io.VarLenFeature(tf.int64),
        schemas.OBJECT_MASK: tf.io.VarLenFeature(tf.string),
        SEMANTIC_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
    }

    def decode(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_single_example(serialized, self.features)
        classes = tf.sparse.to_dense(parsed[schemas.OBJECT_LABEL])
        is_crowd = tf.sparse.to_dense(parsed[schemas.OBJECT_IS_CROWD])
        # is_crowd is optional in the public tool's output; absent means "not crowd".
        is_crowd = tf.cond(
            tf.equal(tf.size(is_crowd), tf.size(classes)),
            lambda: is_crowd,
            lambda: tf.zeros_like(classes),
        )
        return {
            "image": parsed[schemas.ENCODED],
            "classes": classes,
            "is_crowd": is_crowd,
            "masks": tf.sparse.to_dense(parsed[schemas.OBJECT_MASK], default_value=""),
            "semantic": parsed[SEMANTIC_ENCODED],
        }


def decode_masks(pngs: tf.Tensor, hw: tf.Tensor) -> tf.Tensor:
    """PNG instance masks string [N] -> bool [N, H, W] (nonzero = inside); `hw` int32 [2] is the
    image's size, which every mask must have (a record where one differs fails)."""

    def decode_all():
        masks = tf.map_fn(
            lambda png: tf.io.decode_png(png, channels=1)[..., 0],
            pngs,
            fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
        )
        tf.debugging.assert_equal(
            tf.shape(masks)[1:], hw, message="instance mask size != image size"
        )
        return masks

    empty = lambda: tf.zeros(tf.concat([[0], hw], 0), tf.uint8)  # noqa: E731
    return tf.cond(tf.size(pngs) > 0, decode_all, empty) > 0


def class_map(masks: tf.Tensor, classes: tf.Tensor, is_crowd: tf.Tensor) -> tf.Tensor:
    """Instance masks bool [N, H, W] with map classes int [N] (0 = not a class of the map: those
    instances are background) and crowd flags [N] -> uint8 [H, W]: 0 background, the class where
    the instances covering a pixel agree on one, 255 where they disagree and on crowd regions of
    a class that no other instance covers."""
    classes = tf.cast(classes, tf.int32)[:, None, None]
    counted = masks & (classes > 0)
    crowd = counted & (tf.cast(is_crowd, tf.bool)[:, None, None])
    solid = counted & ~crowd
    hi = tf.reduce_max(tf.where(solid, classes, 0), axis=0)
    lo = tf.reduce_min(tf.where(solid, classes, IGNORE_LABEL + 1), axis=0)
    # Over zero instances reduce_max/min give the dtype's extremes: clamp to "none".
    hi, lo = tf.maximum(hi, 0), tf.minimum(lo, IGNORE_LABEL + 1)
    covered = hi > 0
    out = tf.where(covered & (hi != lo), IGNORE_LABEL, hi)
    out = tf.where(~covered & tf.reduce_any(crowd, axis=0), IGNORE_LABEL, out)
    return tf.cast(out, tf.uint8)


def valid_size(hw: tf.Tensor, size: int) -> tf.Tensor:
    """int32 [2]: the part of a `size` x `size` eval input an `hw` image fills (its long side
    resized to `size`; `resize_and_pad`'s rounding)."""
    hw = tf.cast(hw, tf.float32)
    return tf.cast(tf.maximum(tf.round(hw * (float(size) / tf.reduce_max(hw))), 1.0), tf.int32)


def preprocess_segmentation_eval(
    image_bytes: tf.Tensor, size: int, max_pixels: int = 0
) -> tuple[tf.Tensor, tf.Tensor]:
    """THE eval/serving preprocessing of segmentation: encoded bytes (scalar string) ->
    (uint8 `[size, size, 3]`, original height/width int32 [2]). `max_pixels` > 0 (serving):
    refuse a larger image, from its header, before decoding."""
    check = check_pixels(header_hw(image_bytes), max_pixels) if max_pixels > 0 else None
    with tf.control_dependencies([check] if check is not None else []):
        image = decode_rgb(image_bytes)
    resized, _, _ = resize_and_pad(image, size)
    return resized, tf.shape(image)[:2]


def pad_labels(labels: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [h, w] -> [size, size], padded bottom/right with 255 (h, w <= size)."""
    padded = tf.pad(
        labels,
        [[0, size - tf.shape(labels)[0]], [0, size - tf.shape(labels)[1]]],
        constant_values=IGNORE_LABEL,
    )
    return tf.ensure_shape(padded, [size, size])


class SegmentationParser:
    """Decoded tensors (`SegmentationDecoder`) -> segmentation model inputs (see module doc).

    Args:
      data_cfg: the data section (random_flip; num_classes).
      seg_cfg: the segmentation section (image_size, layout, classes, scale_jitter,
        max_eval_size).
      training: the train geometry (True) or the eval one (False).
      label_map: COCO category id -> index (layout instance_masks, classes all).
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        seg_cfg: SegmentationConfig,
        *,
        training: bool,
        label_map: LabelMap | None,
    ) -> None:
        self.data_cfg = data_cfg
        self.seg_cfg = seg_cfg
        self.training = training
        self.decoder = SegmentationDecoder()
        self._table = None
        if seg_cfg.layout == "instance_masks":
            if seg_cfg.classes == "voc21":
                keys = tf.constant(VOC_COCO_IDS, tf.int64)
                values = tf.range(1, len(VOC_COCO_IDS) + 1, dtype=tf.int64)
                self._table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(keys, values), 0
                )
            elif label_map is not None:
                self._table = lookup_table(label_map)

    def map_classes(self, classes: tf.Tensor) -> tf.Tensor:
        """Raw category ids int [N] -> class-map values int64 [N] (0 = not in the map); an id
        missing from the label map fails the parse (as detection's)."""
        classes = tf.cast(classes, tf.int64)
        if self.seg_cfg.classes == "voc21":
            return self._table.lookup(classes)
        indices = self._table.lookup(classes) if self._table is not None else classes
        tf.debugging.assert_equal(
            tf.reduce_all((indices >= 0) & (indices < self.data_cfg.num_classes)),
            True,
            message="COCO category id not in the label map (or index >= data.num_classes)",
        )
        return indices + 1

    def labels(self, tensors: dict[str, tf.Tensor], hw: tf.Tensor) -> tf.Tensor:
        """The record's class map uint8 [H, W] at the image's size `hw`."""
        if self.seg_cfg.layout == "semantic":
            labels = tf.io.decode_png(tensors["semantic"], channels=1)[..., 0]
            n = self.data_cfg.num_classes
            tf.debugging.assert_equal(
                tf.reduce_all((labels < n) | (labels == IGNORE_LABEL)),
                True,
                message=f"semantic class map value >= data.num_classes ({n}) and != 255",
            )
            tf.debugging.assert_equal(tf.shape(labels), hw, message="class map size != image")
            return labels
        tf.debugging.assert_equal(
            tf.size(tensors["masks"]),
            tf.size(tensors["classes"]),
            message="COCO record without one instance mask per object: build the shards with "
            "make_coco_tfrecords --include_masks (or set segmentation.layout: semantic)",
        )
        masks = decode_masks(tensors["masks"], hw)
        return class_map(masks, self.map_classes(tensors["classes"]), tensors["is_crowd"])

    def validate(self, tensors: dict[str, tf.Tensor]) -> tf.Tensor:
        """Fails wherever `__call__` can fail on `tensors` (the corrupt-data post-mortem's
        check); returns the decoded image's shape int32 [3]."""
        shape = tf.shape(decode_rgb(tensors["image"]))
        with tf.control_dependencies([self.labels(tensors, shape[:2])]):
            return tf.identity(shape)

    def dummy(self) -> tuple:
        """Zero outputs of `__call__`'s structure (what skip mode yields for a skipped record)."""
        size, m = self.seg_cfg.image_size, self.seg_cfg.max_eval_size
        image = tf.zeros([size, size, 3], tf.uint8)
        if self.training:
            return image, tf.fill([size, size], tf.constant(IGNORE_LABEL, tf.uint8))
        inputs = {"images": image, "image_hw": tf.ones([2], tf.int32)}
        return inputs, tf.fill([m, m], IGNORE_LABEL)

    def __call__(self, tensors: dict[str, tf.Tensor], seed: tf.Tensor) -> tuple:
        """Train or eval outputs (module doc); `seed` int [2] (stateless)."""
        if not self.training:
            size, m = self.seg_cfg.image_size, self.seg_cfg.max_eval_size
            image, hw = preprocess_segmentation_eval(tensors["image"], size)
            tf.debugging.assert_less_equal(
                tf.reduce_max(hw),
                m,
                message=f"eval image larger than segmentation.max_eval_size ({m}) pixels a side",
            )
            # int32: the eval step gathers labels across replicas, which uint8 cannot be.
            labels = tf.cast(pad_labels(self.labels(tensors, hw), m), tf.int32)
            return {"images": image, "image_hw": hw}, labels
        image = decode_rgb(tensors["image"])
        labels = self.labels(tensors, tf.shape(image)[:2])
        return self._train(image, labels, seed)

    def _train(self, image: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple:
        size = self.seg_cfg.image_size
        flip_seed, scale_seed, crop_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        )
        if self.data_cfg.random_flip:
            flip = tf.random.stateless_uniform([], flip_seed) < 0.5
            image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
            labels = tf.cond(flip, lambda: tf.reverse(labels, [1]), lambda: labels)
        lo, hi = self.seg_cfg.scale_jitter
        factor = tf.random.stateless_uniform([], scale_seed, lo, hi)
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scaled = tf.maximum(tf.round(hw * (size * factor / tf.reduce_max(hw))), 1.0)
        offset = tf.floor(
            tf.maximum(scaled - float(size), 0.0) * tf.random.stateless_uniform([2], crop_seed)
        )
        top, left = tf.unstack(tf.cast(offset, tf.int32))
        target = tf.cast(scaled, tf.int32)
        resized = tf.image.resize(tf.cast(image, tf.float32), target)
        nearest = tf.image.resize(labels[..., None], target, method="nearest")[..., 0]
        # Bilinear weights are convex, so values stay in 0..255: +0.5 then truncation rounds.
        image = tf.cast(resized[top : top + size, left : left + size] + 0.5, tf.uint8)
        image = tf.image.pad_to_bounding_box(image, 0, 0, size, size)
        return image, pad_labels(nearest[top : top + size, left : left + size], size)
