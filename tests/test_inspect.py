"""inspect_tfrecords: counts, labels and undecodable records, on our shards and public-style ones."""

from __future__ import annotations

import pytest
import tensorflow as tf
from test_builders_rawdata import image_bytes, truncated_jpeg

from transfer_tf.data import schemas
from transfer_tf.data.inspect import inspect_tfrecords, summary_line
from transfer_tf.errors import UsageError


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def test_counts_labels_and_finds_the_undecodable_record(tmp_path):
    labels = [1, 2, 2, 3, 1]
    with tf.io.TFRecordWriter(str(tmp_path / "ours-00000-of-00002")) as w:
        for i, label in enumerate(labels[:3]):
            ex = schemas.classification_example(image_bytes(i), label, "n0", 48, 64, f"{i}.JPEG")
            w.write(ex.SerializeToString())
    # A "public tool" shard: only the two keys Model Garden reads, one truncated JPEG.
    with tf.io.TFRecordWriter(str(tmp_path / "ours-00001-of-00002")) as w:
        for i, label in enumerate(labels[3:]):
            data = truncated_jpeg(i) if i == 1 else image_bytes(10 + i)
            feature = {schemas.ENCODED: _bytes(data), schemas.CLASS_LABEL: _int(label)}
            w.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    summary = inspect_tfrecords(str(tmp_path / "ours-*"))
    assert summary["schema"] == "classification" and summary["files"] == 2
    assert summary["records"] == 5 and summary["undecodable"] == 1 and summary["unparsable"] == 0
    assert summary["per_label"] == {"1": 2, "2": 2, "3": 1}
    assert summary["undecodable_examples"] == [f"{tmp_path}/ours-00001-of-00002:1"]
    assert "\n" not in summary_line(summary)


def test_coco_schema_and_errors(tmp_path):
    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for ids in ([1, 18, 18], []):
            ex = schemas.coco_example(
                image_bytes(0),
                48,
                64,
                "a.jpg",
                "7",
                "x",
                [[0, 0, 1, 1]] * len(ids),
                ids,
                ["c"] * len(ids),
                [0] * len(ids),
                [1.0] * len(ids),
            )
            w.write(ex.SerializeToString())
    summary = inspect_tfrecords(path)
    assert summary["schema"] == "coco" and summary["records"] == 2
    assert summary["per_label"] == {"1": 1, "18": 2} and summary["images_without_objects"] == 1
    with pytest.raises(UsageError, match="matches no file"):
        inspect_tfrecords(str(tmp_path / "none-*"))
    # Forcing the wrong schema: the records do not parse as classification Examples.
    assert inspect_tfrecords(path, schema="classification")["unparsable"] == 2
