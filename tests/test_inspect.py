"""inspect_tfrecords: counts, labels and undecodable records, on our shards and public-style ones."""

from __future__ import annotations

import pytest
import tensorflow as tf
from test_builders_rawdata import image_bytes, truncated_jpeg

from transfer_tf.data import schemas
from transfer_tf.data.decoders import make_decoder
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


def _read_bytes() -> int:
    """Bytes this process has read through read()/pread() so far (Linux /proc/self/io)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_reads_each_file_once_and_judges_records_as_training_does(tmp_path):
    from test_builders_rawdata import image_bytes as encoded

    from transfer_tf.config import DataConfig
    from transfer_tf.data.parsers import Parser

    pad = tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(300_000)]))
    records = [  # (image, stored label); num_classes 3, label_offset 1 below
        (encoded(0), 1),
        (encoded(1, fmt="PNG"), 2),  # training (data.jpeg_only) rejects it
        (encoded(2), 7),  # label - offset outside 0..2
        (truncated_jpeg(3), 3),
        (encoded(4), 3),
    ] * 8
    path = str(tmp_path / "train-00000-of-00001")
    with tf.io.TFRecordWriter(path) as w:
        for data, label in records:
            feature = {schemas.ENCODED: _bytes(data), schemas.CLASS_LABEL: _int(label), "pad": pad}
            w.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    data_cfg = DataConfig(num_classes=3, label_offset=1)
    inspect_tfrecords(path, data_cfg=data_cfg)  # warm up: tracing, thread pools
    before = _read_bytes()
    summary = inspect_tfrecords(path, data_cfg=data_cfg)
    read = _read_bytes() - before
    size = tf.io.gfile.stat(path).length
    assert size > 10_000_000 and read < 1.3 * size, (read, size)
    assert summary["records"] == 40 and summary["unparsable"] == 0
    assert (summary["not_jpeg"], summary["bad_label"], summary["undecodable"]) == (8, 8, 8)
    assert summary["accepted"] == 16
    assert summary["bad_examples"][:3] == [
        f"{path}:1 (image is not a JPEG: data.jpeg_only)",
        f"{path}:2 (label - label_offset(1) outside 0..2)",
        f"{path}:3 (image does not decode)",
    ]
    # Exactly training's verdict: the parser's own check fails on each rejected record.
    parser = Parser(data_cfg, training=True, jpeg_only=True)
    decode = make_decoder("classification").decode
    for data, label in records[:5]:
        serialized = tf.train.Example(
            features=tf.train.Features(
                feature={schemas.ENCODED: _bytes(data), schemas.CLASS_LABEL: _int(label)}
            )
        ).SerializeToString()
        try:
            parser.validate(decode(tf.constant(serialized)))
            passed = True
        except tf.errors.OpError:
            passed = False
        assert passed == (data is records[0][0] or data is records[4][0])
    # PNG is fine where training accepts every format.
    relaxed = inspect_tfrecords(path, data_cfg=DataConfig(num_classes=3, jpeg_only=False))
    assert relaxed["not_jpeg"] == 0 and relaxed["accepted"] == 24
    # A shard cut mid-record: the records before the cut are judged, the file is named.
    cut = str(tmp_path / "cut-00000-of-00001")
    with open(path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read()[: size // 2 + 1000])
    broken = inspect_tfrecords(cut, data_cfg=data_cfg)
    assert 0 < broken["records"] < 40 and [c["file"] for c in broken["corrupt_files"]] == [cut]
    assert "framing after record" in broken["corrupt_files"][0]["reason"]
