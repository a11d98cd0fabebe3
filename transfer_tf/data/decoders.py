"""Serialized `tf.train.Example` -> tensors, one decoder per TFRecord schema (no model knowledge).

Decoders only parse; turning the tensors into model inputs (crops, labels as vectors) is the
parsers' job (`transfer_tf.data.parsers`), so the same parsers also serve the TFDS source.

Every decoder returns a dict with at least `image` (tf.string scalar, the encoded image). The
classification decoder adds `label` (tf.int64 scalar, the label as stored); the COCO decoder adds
`boxes` (tf.float32 [N, 4] normalised `ymin, xmin, ymax, xmax`), `classes` (tf.int64 [N], raw
category ids), `is_crowd` (tf.int64 [N]) and `area` (tf.float32 [N] pixels, the annotation's area
COCOeval sizes objects by; -1 where the record has none).

Only `image/encoded` and the label keys are required, so shards written by the public tools (or a
minimal writer that stores just `image/encoded` + `image/class/label`, which is all Model Garden's
classification decoder reads) decode too.

Example:
    decoder = make_decoder("classification")
    tensors = decoder.decode(serialized)  # {"image": tf.string [], "label": tf.int64 []}
"""

from __future__ import annotations

import tensorflow as tf

from transfer_tf.data import schemas
from transfer_tf.errors import UsageError


class ClassificationDecoder:
    """imagenet_to_gcs.py schema -> `{"image": string [], "label": int64 []}`.

    A record without `image/class/label` decodes to label -1, which the parser rejects as out of
    range (so it is reported as bad data rather than silently trained on).
    """

    features = {
        schemas.ENCODED: tf.io.FixedLenFeature((), tf.string),
        schemas.CLASS_LABEL: tf.io.FixedLenFeature((), tf.int64, default_value=-1),
    }

    def decode(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_single_example(serialized, self.features)
        return {"image": parsed[schemas.ENCODED], "label": parsed[schemas.CLASS_LABEL]}


class CocoDecoder:
    """create_coco_tf_record.py schema -> image, boxes [N, 4] (yxyx, normalised), classes, is_crowd."""

    features = {
        schemas.ENCODED: tf.io.FixedLenFeature((), tf.string),
        schemas.BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
        schemas.BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
        schemas.BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
        schemas.BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
        schemas.OBJECT_LABEL: tf.io.VarLenFeature(tf.int64),
        schemas.OBJECT_IS_CROWD: tf.io.VarLenFeature(tf.int64),
        schemas.OBJECT_AREA: tf.io.VarLenFeature(tf.float32),
    }

    def decode(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_single_example(serialized, self.features)
        dense = {
            k: tf.sparse.to_dense(v) for k, v in parsed.items() if isinstance(v, tf.SparseTensor)
        }
        boxes = tf.stack(
            [
                dense[schemas.BBOX_YMIN],
                dense[schemas.BBOX_XMIN],
                dense[schemas.BBOX_YMAX],
                dense[schemas.BBOX_XMAX],
            ],
            axis=-1,
        )
        classes = dense[schemas.OBJECT_LABEL]
        # is_crowd is optional in the public tool's output; absent means "not crowd".
        is_crowd = dense[schemas.OBJECT_IS_CROWD]
        is_crowd = tf.cond(
            tf.equal(tf.size(is_crowd), tf.size(classes)),
            lambda: is_crowd,
            lambda: tf.zeros_like(classes),
        )
        area = dense[schemas.OBJECT_AREA]
        area = tf.cond(
            tf.equal(tf.size(area), tf.size(classes)),
            lambda: area,
            lambda: -tf.ones(tf.shape(classes), tf.float32),
        )
        # A record whose box and label counts disagree is malformed: fail (reported with its shard).
        tf.debugging.assert_equal(
            tf.shape(boxes)[0], tf.size(classes), message="COCO record: #boxes != #labels"
        )
        return {
            "image": parsed[schemas.ENCODED],
            "boxes": tf.reshape(boxes, [-1, 4]),
            "classes": classes,
            "is_crowd": is_crowd,
            "area": area,
        }


Decoder = ClassificationDecoder | CocoDecoder


def make_decoder(schema: str) -> Decoder:
    """Returns the decoder for `schema` (`classification` or `coco`)."""
    if schema == "classification":
        return ClassificationDecoder()
    if schema == "coco":
        return CocoDecoder()
    raise UsageError(f"data.schema: unknown schema '{schema}' (expected one of {schemas.SCHEMAS})")
