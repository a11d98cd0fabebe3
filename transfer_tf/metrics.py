"""Evaluation metrics: multi-label mAP / per-class AP / F1, single-label top-k accuracy.

Average precision is the non-interpolated definition used by scikit-learn's
`average_precision_score` and by the multi-label classification literature (VOC-style "all
points", no 11-point interpolation): with the scores of one class sorted in descending order and
tied scores treated as one threshold,

    AP = sum_k (R_k - R_{k-1}) * P_k

over the distinct thresholds k. mAP is the macro average over classes that have at least one
positive example (a class with no positives has an undefined AP and is excluded, not counted as 0).

AP needs every score of a class, so evaluation accumulates scores on the host
(`MultilabelAccumulator`: 5,000 COCO images x 80 classes is 1.6 MB of float32); top-k needs only
running counts (`TopKAccumulator`).

Example:
    acc = MultilabelAccumulator(num_classes=80, threshold=0.5)
    for images, labels in eval_ds:
        acc.update(labels.numpy(), tf.sigmoid(model(images)).numpy())
    result = acc.result()  # {"mAP": ..., "per_class_AP": [...], "micro_F1": ..., ...}
"""

from __future__ import annotations

import numpy as np

from transfer_tf.errors import UsageError


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise UsageError(f"{name}: expected a [N, num_classes] array, got shape {array.shape}")
    return array


def _check_pair(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = _as_2d("labels", labels)
    scores = _as_2d("scores", scores)
    if labels.shape != scores.shape:
        raise UsageError(
            f"labels {labels.shape} and scores {scores.shape} must have the same [N, C] shape"
        )
    return labels, scores


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP of one class.

    Args:
      labels: [N] {0, 1} (any dtype; values > 0.5 count as positive, so soft labels are binarised).
      scores: [N] float, higher = more confident; any monotonic transform gives the same AP.
    Returns:
      AP in [0, 1], or NaN when there are no positives.
    """
    labels = np.asarray(labels).reshape(-1) > 0.5
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    num_pos = int(labels.sum())
    if num_pos == 0:
        return float("nan")
    # Stable sort so equal scores keep a fixed order; ties are then merged into one threshold.
    order = np.argsort(-scores, kind="mergesort")
    scores = scores[order]
    labels = labels[order]
    # Last index of each run of equal scores: the points where the threshold actually changes.
    distinct = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels)[distinct]
    fps = (distinct + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / num_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_class_average_precision(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of each class: labels/scores [N, C] -> float64 [C] (NaN for classes with no positives)."""
    labels, scores = _check_pair(labels, scores)
    return np.array([average_precision(labels[:, c], scores[:, c]) for c in range(labels.shape[1])])


def f1_at_threshold(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Multi-label F1 with `probs >= threshold` as the predictions.

    Args:
      labels: [N, C] {0, 1}; probs: [N, C] probabilities (sigmoid outputs).
    Returns:
      {"micro_F1", "macro_F1", "micro_precision", "micro_recall"}: micro pools every (image, class)
      decision; macro averages per-class F1 over classes with positives (or predictions).
    """
    labels, probs = _check_pair(labels, probs)
    truth = labels > 0.5
    pred = probs >= threshold
    tp = (truth & pred).sum(axis=0).astype(np.float64)
    fp = (~truth & pred).sum(axis=0).astype(np.float64)
    fn = (truth & ~pred).sum(axis=0).astype(np.float64)

    def f1(tp, fp, fn):
        denom = 2 * tp + fp + fn
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), np.nan)

    per_class = f1(tp, fp, fn)
    valid = ~np.isnan(per_class)
    stp, sfp, sfn = tp.sum(), fp.sum(), fn.sum()
    return {
        "micro_F1": float(f1(stp, sfp, sfn)),
        "macro_F1": float(per_class[valid].mean()) if valid.any() else float("nan"),
        "micro_precision": float(stp / (stp + sfp)) if stp + sfp > 0 else 0.0,
        "micro_recall": float(stp / (stp + sfn)) if stp + sfn > 0 else 0.0,
    }


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function of float logits [...] -> probabilities, same shape.

    `1 / (1 + exp(-x))` overflows (RuntimeWarning) for x < ~-88 in float32; here exp only ever
    sees -|x| <= 0, so no input overflows and saturated logits give exactly 0 or 1.
    """
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def top_k_correct(labels: np.ndarray, logits: np.ndarray, k: int) -> np.ndarray:
    """Per example, whether the true class is among the k highest logits.

    Args:
      labels: int [N] class indices, or [N, C] one-hot/soft labels (the argmax is the true class).
      logits: [N, C] scores.
    Returns:
      bool [N]. Classes tied with the true class's score do not push it out of the top k (the
      `tf.math.in_top_k` convention).
    """
    logits = _as_2d("logits", logits)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if labels.shape != (logits.shape[0],):
        raise UsageError(f"labels {labels.shape} do not match logits {logits.shape}")
    k = min(k, logits.shape[1])
    # Rank of the true class = number of classes with a strictly higher score.
    true_score = logits[np.arange(logits.shape[0]), labels]
    rank = (logits > true_score[:, None]).sum(axis=1)
    return rank < k


class MultilabelAccumulator:
    """Collects (labels, probabilities) batches; `result()` gives mAP, per-class AP and F1.

    Example:
        acc = MultilabelAccumulator(num_classes=3)
        acc.update(np.array([[1, 0, 1]]), np.array([[0.9, 0.2, 0.4]]))
        acc.result()["mAP"]
    """

    def __init__(self, num_classes: int, threshold: float = 0.5):
        self.num_classes = num_classes
        self.threshold = threshold
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def update(self, labels: np.ndarray, probs: np.ndarray) -> None:
        """Adds a batch: labels float/int [B, C], probs float [B, C] (sigmoid outputs)."""
        labels, probs = _check_pair(labels, probs)
        if labels.shape[1] != self.num_classes:
            raise UsageError(f"expected {self.num_classes} classes, got {labels.shape[1]}")
        self._labels.append(labels.astype(np.float32))
        self._scores.append(probs.astype(np.float32))

    @property
    def num_examples(self) -> int:
        return sum(len(x) for x in self._labels)

    def result(self) -> dict:
        """{"mAP", "per_class_AP" (list, None for classes without positives), "num_classes_with_
        positives", "micro_F1", "macro_F1", "micro_precision", "micro_recall", "threshold",
        "num_examples"}."""
        if not self._labels:
            raise UsageError("no evaluation examples were seen")
        labels = np.concatenate(self._labels)
        scores = np.concatenate(self._scores)
        ap = per_class_average_precision(labels, scores)
        valid = ~np.isnan(ap)
        out = {
            "mAP": float(ap[valid].mean()) if valid.any() else float("nan"),
            "per_class_AP": [None if np.isnan(a) else float(a) for a in ap],
            "num_classes_with_positives": int(valid.sum()),
            "num_examples": int(labels.shape[0]),
            "threshold": self.threshold,
        }
        out.update(f1_at_threshold(labels, scores, self.threshold))
        return out


class TopKAccumulator:
    """Running top-1/top-5 (or any ks) accuracy over batches; memory is O(1).

    Example:
        acc = TopKAccumulator(ks=(1, 5))
        acc.update(one_hot_labels, logits)
        acc.result()  # {"top_1_accuracy": ..., "top_5_accuracy": ..., "num_examples": N}
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5)):
        self.ks = tuple(ks)
        self._correct = dict.fromkeys(self.ks, 0)
        self._count = 0

    def update(self, labels: np.ndarray, logits: np.ndarray) -> None:
        """Adds a batch: labels int [B] or one-hot/soft [B, C]; logits [B, C]."""
        for k in self.ks:
            self._correct[k] += int(top_k_correct(labels, logits, k).sum())
        self._count += np.asarray(logits).shape[0]

    def result(self) -> dict:
        if self._count == 0:
            raise UsageError("no evaluation examples were seen")
        out = {f"top_{k}_accuracy": self._correct[k] / self._count for k in self.ks}
        out["num_examples"] = self._count
        return out
