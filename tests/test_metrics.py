"""Metrics agree with independent references (scikit-learn, tf.math.in_top_k) on random data."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from transfer_tf import metrics
from transfer_tf.errors import UsageError


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
def test_per_class_ap_and_map_match_sklearn(seed, ties):
    labels, scores = _random_multilabel(seed, ties=ties)
    ap = metrics.per_class_average_precision(labels, scores)
    assert np.isnan(ap[-1])
    for c in range(labels.shape[1] - 1):
        ref = average_precision_score(labels[:, c], scores[:, c])
        np.testing.assert_allclose(ap[c], ref, rtol=1e-6, atol=1e-9)
    valid = labels.sum(axis=0) > 0
    ref_map = average_precision_score(labels[:, valid], scores[:, valid], average="macro")
    np.testing.assert_allclose(_map(labels, scores), ref_map, rtol=1e-6)


def test_perfect_and_reversed_ranking():
    labels = np.array([[1], [1], [0], [0]])
    assert _map(labels, np.array([[0.9], [0.8], [0.2], [0.1]])) == 1.0
    # Reversed: positives at ranks 3 and 4 -> AP = (1/2)(1/3) + (1/2)(2/4).
    reversed_ap = _map(labels, np.array([[0.1], [0.2], [0.8], [0.9]]))
    assert reversed_ap == pytest.approx(0.5 / 3 + 0.5 * 0.5)


def test_f1_matches_sklearn():
    labels, scores = _random_multilabel(3)
    probs = scores / scores.max()
    out = metrics.f1_at_threshold(labels, probs, threshold=0.5)
    pred = (probs >= 0.5).astype(int)
    assert out["micro_F1"] == pytest.approx(f1_score(labels, pred, average="micro"))
    has_any = (labels.sum(0) + pred.sum(0)) > 0
    ref_macro = f1_score(labels[:, has_any], pred[:, has_any], average="macro")
    assert out["macro_F1"] == pytest.approx(ref_macro)


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
