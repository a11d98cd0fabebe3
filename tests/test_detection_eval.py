"""COCOeval through `detection.evaluation.CocoAccumulator`: perfect detections score AP 1.0,
shifted or mislabelled ones less; boxes go back to original pixels and classes to COCO ids."""

import numpy as np
import pytest

from transfer_tf.data.label_maps import parse_label_map
from transfer_tf.detection.evaluation import CocoAccumulator, category_ids, to_original_pixels

LABEL_MAP = parse_label_map({"1": 0, "7": 1, "22": 2})  # COCO-style ids with gaps
M, K = 4, 5
# Two images, original sizes 200 x 100 (h x w) and 120 x 160, eval-resized to a 128 px input.
HW = np.array([[200, 100], [120, 160]], np.int32)
SCALE = np.array([[128 / 200, 64 / 100], [96 / 120, 128 / 160]], np.float32)
GT = [
    np.array([[10, 10, 90, 60], [100, 20, 190, 95]], np.float32),  # classes 0 and 2
    np.array([[5, 30, 100, 150]], np.float32),  # class 1
]
GT_CLASSES = [[0, 2], [1]]


def _labels():
    boxes = -np.ones([2, M, 4], np.float32)
    classes = -np.ones([2, M], np.int32)
    area = np.zeros([2, M], np.float32)
    for i, (b, c) in enumerate(zip(GT, GT_CLASSES, strict=True)):
        boxes[i, : len(b)] = b
        classes[i, : len(c)] = c
        area[i, : len(b)] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return {
        "image_scale": SCALE,
        "image_hw": HW,
        "gt_boxes": boxes,
        "gt_classes": classes,
        "gt_is_crowd": np.zeros([2, M], np.int32),
        "gt_area": area,
    }


def _detections(shift=0.0, classes=None):
    """Detections in MODEL-INPUT pixels (what the detector outputs): the ground truth scaled into
    the input, moved `shift` original pixels right."""
    boxes = np.zeros([2, K, 4], np.float32)
    scores = np.zeros([2, K], np.float32)
    out_classes = -np.ones([2, K], np.int32)
    num = np.zeros([2], np.int32)
    for i, b in enumerate(GT):
        moved = b + np.array([0, shift, 0, shift], np.float32)
        boxes[i, : len(b)] = moved * np.tile(SCALE[i], 2)
        scores[i, : len(b)] = 0.9
        out_classes[i, : len(b)] = (classes or GT_CLASSES)[i]
        num[i] = len(b)
    return {"boxes": boxes, "scores": scores, "classes": out_classes, "num_detections": num}


def _evaluate(detections):
    acc = CocoAccumulator(category_ids(LABEL_MAP, 3))
    acc.update(_labels(), detections)
    return acc, acc.result()


def test_perfect_detections_score_ap_one():
    acc, metrics = _evaluate(_detections())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)
    assert metrics["num_images"] == 2 and metrics["num_detections"] == 3
    # Category ids are COCO's (not indices) and boxes are back in original pixels (xywh).
    assert sorted(a["category_id"] for a in acc.annotations) == [1, 7, 22]
    assert sorted(d["category_id"] for d in acc.detections) == [1, 7, 22]
    first = next(d for d in acc.detections if d["category_id"] == 22)
    np.testing.assert_allclose(first["bbox"], [20, 100, 75, 90], atol=1e-3)


def test_shifted_or_mislabelled_detections_score_lower():
    _, small_shift = _evaluate(_detections(shift=8.0))
    _, big_shift = _evaluate(_detections(shift=40.0))
    assert small_shift["AP"] < 1.0 and small_shift["AP50"] == pytest.approx(1.0)
    assert big_shift["AP"] < small_shift["AP"] and big_shift["AP50"] < 1.0
    _, wrong_class = _evaluate(_detections(classes=[[2, 0], [1]]))
    assert wrong_class["AP"] < 0.5


def test_no_detections_scores_zero():
    empty = {
        "boxes": np.zeros([2, K, 4], np.float32),
        "scores": np.zeros([2, K], np.float32),
        "classes": -np.ones([2, K], np.int32),
        "num_detections": np.zeros([2], np.int32),
    }
    assert _evaluate(empty)[1]["AP"] == 0.0


def test_boxes_map_back_to_original_pixels_clipped_to_the_image():
    out = to_original_pixels(np.array([[0, 0, 128, 64]], np.float32), SCALE[0], HW[0])
    np.testing.assert_allclose(out, [[0, 0, 200, 100]])
    clipped = to_original_pixels(np.array([[0, 0, 128, 128]], np.float32), SCALE[0], HW[0])
    np.testing.assert_allclose(clipped, [[0, 0, 200, 100]])  # the padding is not image
