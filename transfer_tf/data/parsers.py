"""Decoded tensors -> model inputs `(image uint8 [S, S, 3], label float32 [num_classes])`.

Parsers sit between the decoders (one per schema, also the TFDS source) and the batching in
`input.py`. They know the label conventions:

* classification: class index = stored label - `label_offset`; out-of-range labels are bad data
  (the parse fails, and the pipeline reports the record with its shard);
* COCO: raw category id -> contiguous index through the label map; labels are multi-hot.

Multi-label crops (COCO, training): the crop is sampled so that it contains at least
`min_object_covered` of one object box, and an object's label is kept only if at least
`min_object_covered` of its box area lies inside the crop. Crowd annotations count like any other
object (a crowd of people is a person in the image). Evaluation uses the centered crop and keeps
every label (the image-level ground truth), which is what COCO multi-label benchmarks score.

Two-view mode (self-supervised pretraining, `views=`): the image bytes become two views and the
labels are ignored (neither mapped nor checked, so unlabeled records parse): `((view1, view2),
label float32 [0])`, whatever the schema.

Example:
    parser = Parser(cfg.data, training=True)
    image, label = parser(decoded_tensors, seed=tf.constant([1, 2], tf.int64))
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from transfer_tf.config import DataConfig
from transfer_tf.data import augment, distort
from transfer_tf.data.label_maps import LabelMap, lookup_table

# (encoded image bytes string [], seed int64 [2], jpeg_only bool) -> (view1, view2), each uint8
# [S, S, 3]: e.g. `functools.partial(ssl.views.two_views_from_bytes, cfg=view_config)`.
ViewsFn = Callable[..., tuple[tf.Tensor, tf.Tensor]]


def box_coverage(boxes: tf.Tensor, window: tf.Tensor, image_hw: tf.Tensor) -> tf.Tensor:
    """Fraction of each normalised yxyx box (float32 [N, 4]) inside a pixel crop window.

    Args:
      window: int32 [4] `[y, x, h, w]` in pixels; image_hw: int32 [2].
    Returns:
      float32 [N] in [0, 1]. Degenerate (zero-area) boxes count as covered when their corner
      point lies inside the window.
    """
    hw = tf.cast(tf.concat([image_hw, image_hw], 0), tf.float32)
    win = tf.cast(window, tf.float32)
    crop = tf.stack([win[0], win[1], win[0] + win[2], win[1] + win[3]]) / hw
    boxes = tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, 1.0)
    inter_h = tf.minimum(boxes[:, 2], crop[2]) - tf.maximum(boxes[:, 0], crop[0])
    inter_w = tf.minimum(boxes[:, 3], crop[3]) - tf.maximum(boxes[:, 1], crop[1])
    inter = tf.maximum(inter_h, 0.0) * tf.maximum(inter_w, 0.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = tf.cast((inter_h >= 0.0) & (inter_w >= 0.0), tf.float32)
    return tf.where(area > 0.0, inter / tf.maximum(area, 1e-12), inside)


class Parser:
    """Builds model inputs from decoded tensors for one split.

    Args:
      data_cfg: the data section (image size, crop ranges, flip, eval crop, classes, schema).
      training: random resized crop + flip (True) or the eval center crop (False).
      label_offset: subtracted from stored classification labels (None: `data_cfg.label_offset`;
        the TFDS source passes 0 because TFDS labels are already class indices).
      label_map: COCO category id -> index; None means the stored classes already are indices
        (TFDS `coco/2017`).
      dct_method: libjpeg IDCT for training decodes (`INTEGER_FAST` is faster than the default
        `INTEGER_ACCURATE` and the difference is far below augmentation noise; eval always uses
        the default inside `preprocess_for_eval`).
      jpeg_only: training images are JPEG, so the per-image format check is skipped (TFRecord
        shards of our schemas; `data.jpeg_only`); anything else then fails as bad data.
      views: two-view mode (see module doc), called as `views(bytes, seed, jpeg_only=...)`.
    """

    def __init__(
        self,
        data_cfg: DataConfig,
        *,
        training: bool,
        label_offset: int | None = None,
        label_map: LabelMap | None = None,
        dct_method: str = "INTEGER_FAST",
        jpeg_only: bool = False,
        views: ViewsFn | None = None,
    ) -> None:
        self.cfg = data_cfg
        self.views = views
        self.training = training
        self.num_classes = data_cfg.num_classes
        self.label_offset = data_cfg.label_offset if label_offset is None else label_offset
        self.dct_method = dct_method
        self.jpeg_only = jpeg_only
        self._table = lookup_table(label_map) if label_map is not None else None

    def __call__(
        self, tensors: dict[str, tf.Tensor], seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns `(image uint8 [S, S, 3], label float32 [num_classes])`; `seed` int [2]."""
        if self.views is not None:
            pair = self.views(tensors["image"], seed, jpeg_only=self.requires_jpeg)
            return pair, tf.zeros([0], tf.float32)
        if "boxes" in tensors:
            return self._parse_multilabel(tensors, seed)
        return self._parse_single_label(tensors, seed)

    def validate(self, tensors: dict[str, tf.Tensor]) -> tf.Tensor:
        """Fails wherever `__call__` can fail on `tensors`, whatever the random crop.

        Checks the labels and decodes the whole image (a crop may miss a truncated tail). Used
        by the corrupt-data post-mortem (`guard.corrupt_data_error`) and `inspect_tfrecords`,
        never in the hot path. Returns the decoded image's shape (int32 [3]).
        """
        if self.views is not None:
            checks = []  # labels are ignored in two-view mode
        elif "boxes" in tensors:
            checks = [self._class_indices(tensors["classes"])]
        else:
            checks = [self._label_index(tensors)]
        if self.requires_jpeg:
            checks.append(
                tf.debugging.assert_equal(
                    tf.io.is_jpeg(tensors["image"]), True, message="image is not a JPEG"
                )
            )
        image = tf.io.decode_image(tensors["image"], channels=3, expand_animations=False)
        with tf.control_dependencies(checks):
            return tf.shape(image)

    @property
    def requires_jpeg(self) -> bool:
        """Whether a non-JPEG image is bad data here (training on shards with `jpeg_only`)."""
        return self.jpeg_only and self.training

    def labels_in_range(self, tensors: dict[str, tf.Tensor]) -> tf.Tensor:
        """bool scalar: every stored label maps to a class index in 0..num_classes-1 (what
        `__call__` asserts; `label_error` is its message otherwise)."""
        if "boxes" in tensors:
            indices = self._lookup(tensors["classes"])
        else:
            indices = tf.cast(tensors["label"], tf.int64) - self.label_offset
        return tf.reduce_all((indices >= 0) & (indices < self.num_classes))

    def label_error(self, multilabel: bool) -> str:
        """The message of a failed `labels_in_range` (COCO tensors: `multilabel`)."""
        if multilabel:
            return "COCO category id not in the label map (or index >= data.num_classes)"
        return f"label - label_offset({self.label_offset}) outside 0..{self.num_classes - 1}"

    # -- single label ----------------------------------------------------------------------
    def _label_index(self, tensors):
        index = tf.cast(tensors["label"], tf.int64) - self.label_offset
        tf.debugging.assert_equal(
            self.labels_in_range(tensors), True, message=self.label_error(False)
        )
        return index

    def _parse_single_label(self, tensors, seed):
        label = tf.one_hot(self._label_index(tensors), self.num_classes, dtype=tf.float32)
        cfg = self.cfg
        if self.training:
            image = augment.preprocess_for_train(
                tensors["image"],
                cfg.image_size,
                seed,
                area_range=cfg.crop_area_range,
                aspect_range=cfg.crop_aspect_range,
                flip=cfg.random_flip,
                fallback_fraction=cfg.eval_crop_fraction,
                dct_method=self.dct_method,
                jpeg_only=self.jpeg_only,
                rotation_degrees=cfg.random_rotation_degrees,
                color_jitter=cfg.color_jitter,
            )
        else:
            image = augment.preprocess_for_eval(
                tensors["image"], cfg.image_size, cfg.eval_crop_fraction
            )
        return image, label

    # -- multi label (COCO) ----------------------------------------------------------------
    def _lookup(self, classes: tf.Tensor) -> tf.Tensor:
        classes = tf.cast(classes, tf.int64)
        return self._table.lookup(classes) if self._table is not None else classes

    def _class_indices(self, classes: tf.Tensor) -> tf.Tensor:
        indices = self._lookup(classes)
        tf.debugging.assert_equal(
            tf.reduce_all((indices >= 0) & (indices < self.num_classes)),
            True,
            message=self.label_error(True),
        )
        return indices

    def _multi_hot(self, indices: tf.Tensor, keep: tf.Tensor | None = None) -> tf.Tensor:
        hot = tf.one_hot(indices, self.num_classes, dtype=tf.float32)
        if keep is not None:
            hot *= tf.cast(keep, tf.float32)[:, None]
        return tf.reduce_max(tf.concat([hot, tf.zeros([1, self.num_classes])], 0), axis=0)

    def _parse_multilabel(self, tensors, seed):
        cfg = self.cfg
        indices = self._class_indices(tensors["classes"])
        if not self.training:
            image = augment.preprocess_for_eval(
                tensors["image"], cfg.image_size, cfg.eval_crop_fraction
            )
            return image, self._multi_hot(indices)
        boxes = tf.reshape(tf.cast(tensors["boxes"], tf.float32), [-1, 4])
        image, window, image_hw = augment.random_resized_crop(
            tensors["image"],
            cfg.image_size,
            seed,
            area_range=cfg.crop_area_range,
            aspect_range=cfg.crop_aspect_range,
            flip=cfg.random_flip,
            boxes=boxes,
            min_object_covered=cfg.min_object_covered,
            fallback_fraction=cfg.eval_crop_fraction,
            dct_method=self.dct_method,
            jpeg_only=self.jpeg_only,
        )
        keep = box_coverage(boxes, window, image_hw) >= cfg.min_object_covered
        image = distort.distort_for_train(
            image, seed, cfg.random_rotation_degrees, cfg.color_jitter
        )
        return image, self._multi_hot(indices, keep)
