"""Metrics agree with independent references on random data: average precision and F1 computed
from their definitions by brute force (as scikit-learn defines them), and tf.math.in_top_k.

The references are written out here rather than taken from scikit-learn: with scikit-learn
installed, every `import keras` also imports it (keras.wrappers) and its scipy, ~0.9 s in each of
the ~120 Python processes the suite starts."""

import numpy as np
import pytest

from transfer_tf import metrics
from transfer_tf.errors import UsageError


def _average_precision_reference(labels: np.ndarray, scores: np.ndarray) -> float:
    """Non-interpolated AP of one class by brute force: one operating point per distinct score
    (every example scoring at least it is predicted positive, so ties enter together), AP =
    sum over points of (recall gained) x (precision there), as sklearn.metrics.average_precision_score."""
    positives = labels.sum()
    ap, last_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        tp = float(labels[predicted].sum())
        recall, precision = tp / positives, tp / predicted.sum()
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def _f1_reference(labels: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(micro F1, macro F1 over the classes with a positive label or prediction), 2TP/(2TP+FP+FN)."""
    tp = (labels * pred).sum(0)
    fp = ((1 - labels) * pred).sum(0)
    fn = (labels * (1 - pred)).sum(0)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    has_any = (tp + fp + fn) > 0
    macro = np.mean(2 * tp[has_any] / (2 * tp[has_any] + fp[has_any] + fn[has_any]))
    return float(micro), float(macro)


def _map(labels, scores) -> float:
    acc = metrics.MultilabelAccumulator(num_classes=labels.shape[1])
    acc.update(labels, scores)
    return acc.result()["mAP"]


def _random_multilabel(seed, n=200, c=12, ties=False):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.2).astype(np.float32)
    labels[:, -1] = 0  # one class with no positives: excluded from the mean, not counted as 0
    scores = rng.random((n, c)).astype(np.float32) + 0.3 * labels
    if ties:
        scores = np.round(scores * 5) / 5  # many tied scores
    return labels, scores


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_ap_and_map_match_the_definition(seed, ties):
    labels, scores = _random_multilabel(seed, ties=ties)
    ap = metrics.per_class_average_precision(labels, scores)
    assert np.isnan(ap[-1])
    refs = [
        _average_precision_reference(labels[:, c], scores[:, c]) for c in range(labels.shape[1] - 1)
    ]
    np.testing.assert_allclose(ap[:-1], refs, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(_map(labels, scores), np.mean(refs), rtol=1e-6)


def test_perfect_and_reversed_ranking():
    labels = np.array([[1], [1], [0], [0]])
    assert _map(labels, np.array([[0.9], [0.8], [0.2], [0.1]])) == 1.0
    # Reversed: positives at ranks 3 and 4 -> AP = (1/2)(1/3) + (1/2)(2/4).
    reversed_ap = _map(labels, np.array([[0.1], [0.2], [0.8], [0.9]]))
    assert reversed_ap == pytest.approx(0.5 / 3 + 0.5 * 0.5)


def test_f1_matches_the_definition():
    labels, scores = _random_multilabel(3)
    probs = scores / scores.max()
    out = metrics.f1_at_threshold(labels, probs, threshold=0.5)
    micro, macro = _f1_reference(labels, (probs >= 0.5).astype(np.float32))
    assert out["micro_F1"] == pytest.approx(micro)
    assert out["macro_F1"] == pytest.approx(macro)


def test_top_k_matches_in_top_k():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=64)
    for k in (1, 5):
        ref = tf.math.in_top_k(tf.constant(labels), tf.constant(logits), k).numpy()
        np.testing.assert_array_equal(metrics.top_k_correct(labels, logits, k), ref)
    one_hot = np.eye(10, dtype=np.float32)[labels]
    assert metrics.top_k_correct(one_hot, logits, 1).mean() == pytest.approx(
        np.mean(logits.argmax(1) == labels)
    )


def test_accumulators_equal_one_shot_results():
    labels, scores = _random_multilabel(5)
    acc = metrics.MultilabelAccumulator(num_classes=labels.shape[1], threshold=0.6)
    for start in range(0, len(labels), 37):  # uneven batches, short last batch
        acc.update(labels[start : start + 37], scores[start : start + 37])
    res = acc.result()
    assert res["num_examples"] == len(labels)
    assert res["mAP"] == pytest.approx(_map(labels, scores))
    assert res["per_class_AP"][-1] is None
    assert res["micro_F1"] == pytest.approx(
        metrics.f1_at_threshold(labels, scores, 0.6)["micro_F1"]
    )

    topk = metrics.TopKAccumulator(ks=(1, 5))
    topk.update(labels.argmax(1)[:100], scores[:100])
    topk.update(labels.argmax(1)[100:], scores[100:])
    assert topk.result()["top_5_accuracy"] == pytest.approx(
        metrics.top_k_correct(labels.argmax(1), scores, 5).mean()
    )


def test_bad_shapes_are_usage_errors():
    with pytest.raises(UsageError, match="same"):
        metrics.per_class_average_precision(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(UsageError, match="no evaluation examples"):
        metrics.MultilabelAccumulator(2).result()


def test_multilabel_eval_sigmoid_is_stable_for_large_logits():
    import warnings

    from transfer_tf.config import load_config
    from transfer_tf.training.evaluation import EvalAccumulator

    cfg = load_config(None, ["data.schema=coco", "data.num_classes=3"])
    acc = EvalAccumulator(cfg)
    logits = np.array([[-1000.0, 0.0, 1000.0], [800.0, -800.0, -3.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # overflow in exp would raise here
        acc.update(np.array([[0, 1, 1], [1, 0, 0]], np.float32), logits)
    probs = acc.acc._scores[0]
    np.testing.assert_allclose(
        probs, [[0.0, 0.5, 1.0], [1.0, 0.0, 1 / (1 + np.exp(3.0))]], rtol=1e-6, atol=1e-30
    )
