"""Semantic segmentation metrics from a confusion matrix, on the eval shards at original size.

Ground truth and predictions are class maps at each image's ORIGINAL size (the eval parser keeps
the labels there; `model.Segmenter` upsamples the logits there before the argmax), padded to one
square with 255, which the accumulator skips with every other ignored pixel. From the confusion
matrix (rows = ground truth, columns = prediction, valid pixels only):
  per_class_iou   {name: TP / (TP + FP + FN)} for every class that occurs in the ground truth
                  or the predictions (null for one that occurs in neither)
  mIoU            the mean of those (as mmsegmentation's nanmean and torchvision's reference)
  pixel_accuracy  correct valid pixels / valid pixels
The accumulator takes any (labels, predictions) integer maps, so an instance-segmentation
evaluator can reuse it on pasted instance masks.

Example:
    metrics = evaluate_run("runs/seg")     # the run's latest checkpoint on its data.eval_pattern
    metrics["mIoU"], metrics["per_class_iou"]["person"]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.data.dataset_fn import dataset_fn
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.segmentation.model import Segmenter
from transfer_tf.segmentation.settings import (
    IGNORE_LABEL,
    VOC_NAMES,
    num_segmentation_classes,
)
from transfer_tf.training import checkpoints
from transfer_tf.training.evaluation import evaluate_model


class ConfusionAccumulator:
    """Accumulates a `num_classes` x `num_classes` int64 confusion matrix over batches.

    `update(labels, predictions)`: integer class maps of one shape (e.g. uint8 [B, M, M]);
    pixels whose label is 255 (ignored, padding) are skipped. `result()`: see module doc.
    """

    def __init__(self, class_names: list[str]):
        self.names = list(class_names)
        self.num_classes = len(self.names)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.num_images = 0

    def update(self, labels: np.ndarray, predictions: np.ndarray) -> None:
        labels = np.asarray(labels).astype(np.int64)
        predictions = np.asarray(predictions).astype(np.int64)
        self.num_images += labels.shape[0] if labels.ndim == 3 else 1
        valid = labels != IGNORE_LABEL
        labels, predictions = labels[valid], predictions[valid]
        for name, values in (("label", labels), ("prediction", predictions)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(
                    f"a {name} outside 0..{self.num_classes - 1} on a pixel whose label is "
                    f"not {IGNORE_LABEL}"
                )
        index = labels * self.num_classes + predictions
        counts = np.bincount(index, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def result(self) -> dict:
        """{"mIoU", "pixel_accuracy", "per_class_iou", "num_images", "num_pixels"}."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        total = m.sum()
        iou = [float(t / u) if u > 0 else None for t, u in zip(tp, union, strict=True)]
        present = [v for v in iou if v is not None]
        return {
            "mIoU": float(np.mean(present)) if present else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
            "per_class_iou": dict(zip(self.names, iou, strict=True)),
            "num_images": int(self.num_images),
            "num_pixels": int(total),
        }


def class_names(cfg: ExperimentConfig) -> list[str]:
    """Names of the class map's values 0..C-1 (settings.py's classes): "background" + the label
    map's names, the VOC names, or (layout semantic) data.label_names_file's, else "0", "1"..."""
    s = cfg.segmentation
    if s.layout == "semantic":
        from transfer_tf.export.saved_model import label_names  # names file, count checked

        return label_names(cfg)
    if s.classes == "voc21":
        return list(VOC_NAMES)
    if cfg.data.label_map_file:
        return ["background", *read_label_map(cfg.data.label_map_file).display_names()]
    return ["background", *(str(i) for i in range(1, num_segmentation_classes(cfg)))]


def accumulator_for(cfg: ExperimentConfig) -> ConfusionAccumulator:
    """The run's accumulator, one row per class of its class map."""
    return ConfusionAccumulator(class_names(cfg))


def evaluate_run(model_dir: str, checkpoint: str | None = None, eval_pattern: str = "") -> dict:
    """mIoU, pixel accuracy and per-class IoU of a segmentation run's checkpoint (default the
    latest) on its eval shards (`eval_pattern` overrides data.eval_pattern)."""
    model, cfg, prefix = checkpoints.load_model_checkpoint(model_dir, checkpoint)
    if eval_pattern:
        cfg.data.eval_pattern = eval_pattern
    strategy = tf.distribute.get_strategy()
    metrics = evaluate_model(
        Segmenter(model, cfg.segmentation),
        strategy,
        dataset_fn(cfg, "eval"),
        accumulator_for(cfg),
    )
    metrics["checkpoint"] = prefix  # the one restored (a damaged newest one is skipped)
    return metrics
