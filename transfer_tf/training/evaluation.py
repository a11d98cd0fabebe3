"""Evaluation under a tf.distribute strategy: one pass, any accumulator, one trace per model.

Example:
    metrics = evaluate_model(model, strategy, eval_dataset_fn, TopKAccumulator((1, 5)))
    metrics = evaluate_run("runs/r50")   # top-1/top-5 (or mAP) of a run's latest checkpoint
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from transfer_tf import metrics
from transfer_tf.config import ExperimentConfig
from transfer_tf.data.dataset_fn import DatasetFn, dataset_fn
from transfer_tf.errors import UsageError
from transfer_tf.metrics import MultilabelAccumulator, TopKAccumulator
from transfer_tf.ssl.settings import is_self_supervised
from transfer_tf.training import checkpoints

# model -> {strategy: compiled eval step}. Weak keys, and the step holds the model weakly, so a
# cached step never keeps a discarded model (or its variables) alive.
_EVAL_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _eval_step(model: keras.Model, strategy: tf.distribute.Strategy) -> Callable:
    """The compiled eval step of (model, strategy), traced once and reused by every eval pass.

    Re-creating the tf.function per pass re-traced the whole model each time (seconds for a
    ResNet-50); tf.function itself retraces only for a new input signature (e.g. a short last
    batch, which `reduce_retracing` folds into one shape-generic trace).
    """
    per_strategy = _EVAL_STEPS.setdefault(model, weakref.WeakKeyDictionary())
    step = per_strategy.get(strategy)
    if step is not None:
        return step
    model_ref = weakref.ref(model)

    # Traced as written: no Python control flow on tensors, and converting this function's
    # source with AutoGraph cost time at every new process.
    @tf.function(reduce_retracing=True, autograph=False)
    def eval_step(images, labels):
        def replica(images, labels):
            outputs = model_ref()(images, training=False)
            if isinstance(outputs, dict):  # e.g. a detector's boxes/scores/classes: as they are
                return outputs, labels
            return tf.cast(outputs, tf.float32), labels

        logits, labels = strategy.run(replica, args=(images, labels))
        return strategy.gather(logits, axis=0), strategy.gather(labels, axis=0)

    per_strategy[strategy] = eval_step
    return eval_step


def evaluate_model(
    model: keras.Model, strategy: tf.distribute.Strategy, dataset_fn: DatasetFn, accumulator
) -> dict:
    """One pass over an eval dataset under `strategy`: `accumulator.update(labels, logits)` with
    numpy float32 `[B, C]` per global batch; returns `accumulator.result()` (transfer_tf.metrics).
    Dict labels and outputs (detection: `detection.evaluation`) reach the accumulator as dicts of
    numpy arrays.

    The compiled step is cached per (model, strategy), so periodic evals trace the model once.
    """
    eval_step = _eval_step(model, strategy)
    for images, labels in strategy.distribute_datasets_from_function(dataset_fn):
        logits, labels = eval_step(images, labels)
        accumulator.update(*tf.nest.map_structure(lambda t: t.numpy(), (labels, logits)))
    return accumulator.result()


class EvalAccumulator:
    """Top-1/top-5 for single-label, mAP/F1 (on sigmoid probabilities) for multi-label."""

    def __init__(self, cfg: ExperimentConfig):
        self.multilabel = cfg.data.task == "multilabel"
        if self.multilabel:
            self.acc = MultilabelAccumulator(cfg.data.num_classes, cfg.transfer.threshold)
        else:
            self.acc = TopKAccumulator((1, 5) if cfg.data.num_classes >= 5 else (1,))

    def update(self, labels: np.ndarray, logits: np.ndarray) -> None:
        if self.multilabel:
            self.acc.update(labels, metrics.sigmoid(logits))
        else:
            self.acc.update(labels, logits)

    def result(self) -> dict:
        return self.acc.result()


def evaluate_run(model_dir: str, checkpoint: str | None = None, eval_pattern: str = "") -> dict:
    """Top-1/top-5 (or mAP for multi-label) of a run's checkpoint on its eval shards."""
    run_cfg = checkpoints.read_run_config(model_dir)
    if run_cfg.transfer.task in ("detection", "segmentation"):
        task = run_cfg.transfer.task
        raise UsageError(
            f"'{model_dir}' is a {task} run: evaluate it with "
            f"transfer_tf.{task}.evaluation.evaluate_run (pipelines/evaluate.py does)"
        )
    if is_self_supervised(run_cfg):
        raise UsageError(
            f"'{model_dir}' is a self-supervised run (ssl.method: {run_cfg.ssl.method}; its "
            "classifier head is untrained): evaluate it with transfer_tf.ssl.knn.evaluate_run "
            "(pipelines/evaluate.py does)"
        )
    model, cfg, prefix = checkpoints.load_model_checkpoint(model_dir, checkpoint)
    if eval_pattern:
        cfg.data.eval_pattern = eval_pattern
    strategy = tf.distribute.get_strategy()
    metrics = evaluate_model(model, strategy, dataset_fn(cfg, "eval"), EvalAccumulator(cfg))
    metrics["checkpoint"] = prefix  # the one restored (a damaged newest one is skipped)
    return metrics
