"""TFRecord schemas: the one place that names each feature key, and the Example encoders.

Two schemas, both byte-compatible with the public TensorFlow tools:

* `classification`: tensorflow/tpu `imagenet_to_gcs.py` (read by Model Garden's classification
  input). Labels are stored as the builder wrote them (1..1000 for public ImageNet shards); the
  reader subtracts `DataConfig.label_offset`.
* `coco`: Model Garden `create_coco_tf_record.py`. Boxes are normalised to [0, 1]; labels are raw
  COCO category ids (1..90 with gaps).

Example:
    ex = classification_example(jpeg_bytes, label=1, synset="n01440764", height=375, width=500,
                                filename="n01440764_10026.JPEG")
    writer.write(ex.SerializeToString())
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

SCHEMA_VERSION = 1
SCHEMAS = ("classification", "coco")

# Classification (imagenet_to_gcs.py).
ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
COLORSPACE = "image/colorspace"
FILENAME = "image/filename"
CLASS_LABEL = "image/class/label"
CLASS_SYNSET = "image/class/synset"
CLASS_TEXT = "image/class/text"

# COCO (create_coco_tf_record.py).
SOURCE_ID = "image/source_id"
KEY_SHA256 = "image/key/sha256"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_YMAX = "image/object/bbox/ymax"
OBJECT_LABEL = "image/object/class/label"
OBJECT_TEXT = "image/object/class/text"
OBJECT_IS_CROWD = "image/object/is_crowd"
OBJECT_AREA = "image/object/area"
OBJECT_MASK = "image/object/mask"


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _b(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def classification_example(
    encoded_jpeg: bytes,
    label: int,
    synset: str,
    height: int,
    width: int,
    filename: str,
    class_text: str | None = None,
) -> tf.train.Example:
    """Builds an imagenet_to_gcs.py-style Example.

    Args:
      encoded_jpeg: a 3-channel RGB JPEG (builders re-encode anything else first).
      label: the stored label, already offset as the caller wants it on disk (1-based for
        ImageNet-compatible shards).
      synset: WordNet id or class folder name; height/width: pixels; filename: base name.
      class_text: optional human-readable name (`image/class/text`).
    """
    feature = {
        ENCODED: _bytes([encoded_jpeg]),
        FORMAT: _bytes([b"JPEG"]),
        CLASS_LABEL: _ints([label]),
        CLASS_SYNSET: _bytes([_b(synset)]),
        HEIGHT: _ints([height]),
        WIDTH: _ints([width]),
        CHANNELS: _ints([3]),
        COLORSPACE: _bytes([b"RGB"]),
        FILENAME: _bytes([_b(filename)]),
    }
    if class_text is not None:
        feature[CLASS_TEXT] = _bytes([_b(class_text)])
    return tf.train.Example(features=tf.train.Features(feature=feature))


def coco_example(
    encoded_jpeg: bytes,
    height: int,
    width: int,
    filename: str,
    source_id: str,
    sha256: str,
    boxes_yxyx: Sequence[Sequence[float]],
    category_ids: Sequence[int],
    category_names: Sequence[str],
    is_crowd: Sequence[int],
    areas: Sequence[float],
    masks_png: Sequence[bytes] | None = None,
) -> tf.train.Example:
    """Builds a create_coco_tf_record.py-style Example.

    Args:
      boxes_yxyx: per object `[ymin, xmin, ymax, xmax]`, normalised to [0, 1].
      category_ids: raw COCO category ids (1..90 with gaps), one per object.
      category_names, is_crowd, areas (pixels): one per object.
      masks_png: optional PNG-encoded instance masks, one per object.
    """
    boxes = [list(b) for b in boxes_yxyx]
    feature = {
        ENCODED: _bytes([encoded_jpeg]),
        FORMAT: _bytes([b"jpeg"]),
        HEIGHT: _ints([height]),
        WIDTH: _ints([width]),
        FILENAME: _bytes([_b(filename)]),
        SOURCE_ID: _bytes([_b(source_id)]),
        KEY_SHA256: _bytes([_b(sha256)]),
        BBOX_YMIN: _floats([b[0] for b in boxes]),
        BBOX_XMIN: _floats([b[1] for b in boxes]),
        BBOX_YMAX: _floats([b[2] for b in boxes]),
        BBOX_XMAX: _floats([b[3] for b in boxes]),
        OBJECT_LABEL: _ints(category_ids),
        OBJECT_TEXT: _bytes([_b(n) for n in category_names]),
        OBJECT_IS_CROWD: _ints(is_crowd),
        OBJECT_AREA: _floats(areas),
    }
    if masks_png is not None:
        feature[OBJECT_MASK] = _bytes(list(masks_png))
    return tf.train.Example(features=tf.train.Features(feature=feature))
