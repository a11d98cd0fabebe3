"""Decoders, label maps and box coverage (COCO label honesty)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.data import schemas
from transfer_tf.data.decoders import make_decoder
from transfer_tf.data.label_maps import parse_label_map, read_label_map
from transfer_tf.data.parsers import box_coverage
from transfer_tf.errors import UsageError


def test_classification_decoder_reads_public_and_minimal_records():
    full = schemas.classification_example(b"\xff\xd8jpeg", 7, "n01", 10, 20, "a.JPEG")
    minimal = tf.train.Example(
        features=tf.train.Features(
            feature={
                schemas.ENCODED: schemas._bytes([b"x"]),
                schemas.CLASS_LABEL: schemas._ints([3]),
            }
        )
    )
    decode = make_decoder("classification").decode
    out = decode(tf.constant(full.SerializeToString()))
    assert out["label"].numpy() == 7 and out["image"].numpy() == b"\xff\xd8jpeg"
    assert decode(tf.constant(minimal.SerializeToString()))["label"].numpy() == 3


def test_coco_decoder_keeps_boxes_classes_and_crowd_flags():
    ex = schemas.coco_example(
        b"img",
        10,
        20,
        "a.jpg",
        "1",
        "0" * 64,
        [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]],
        [3, 90],
        ["car", "toothbrush"],
        [0, 1],
        [5.0, 6.0],
    )
    out = make_decoder("coco").decode(tf.constant(ex.SerializeToString()))
    np.testing.assert_allclose(out["boxes"].numpy(), [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    assert out["classes"].numpy().tolist() == [3, 90]
    assert out["is_crowd"].numpy().tolist() == [0, 1]
    assert out["area"].numpy().tolist() == [5.0, 6.0]


@pytest.mark.parametrize(
    "data",
    [
        {"90": 1, "3": 0},
        {"90": {"index": 1, "name": "toothbrush"}, "3": {"index": 0, "name": "car"}},
        [{"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}],
        {"categories": [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}]},
    ],
)
def test_label_map_layouts_agree(data):
    label_map = parse_label_map(data)
    assert label_map.id_to_index == {3: 0, 90: 1}
    assert label_map.num_classes == 2


def test_bad_label_maps_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="indices must be"):
        parse_label_map({"1": 0, "2": 2})
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        read_label_map(str(path))
    with pytest.raises(UsageError, match="does not exist"):
        read_label_map(str(tmp_path / "missing.json"))
    path.write_text(json.dumps({"1": "x"}))
    with pytest.raises(UsageError, match="entry"):
        read_label_map(str(path))


def test_box_coverage_is_the_fraction_of_each_box_inside_the_crop():
    boxes = tf.constant([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0], [0.9, 0.9, 1.0, 1.0]])
    window = tf.constant([0, 0, 50, 100])  # top half of a 100x100 image
    coverage = box_coverage(boxes, window, tf.constant([100, 100])).numpy()
    np.testing.assert_allclose(coverage, [1.0, 0.5, 0.0], atol=1e-6)
