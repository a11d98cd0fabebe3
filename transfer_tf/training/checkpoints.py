"""The on-disk layout of a training run, and rebuilding its model.

    MODEL_DIR/config.yaml            the resolved ExperimentConfig (cli.write_resolved_config)
    MODEL_DIR/checkpoints/ckpt-STEP  tf.train.Checkpoint(model=, optimizer=, global_step=,
                                     optimizer_start_step=[, ema=][, train_iterator=]), managed
                                     by tf.train.CheckpointManager (training/loop.py)
    MODEL_DIR/summaries/{train,eval} TensorBoard event files
    MODEL_DIR/eval_metrics.json      written by pipelines/evaluate.py

Damaged checkpoints (a truncated or missing file) are found and told apart by
`checkpoint_health`: loading a run's latest falls back to its newest intact checkpoint.

Example:
    model, cfg = load_model("runs/r50")          # latest checkpoint's weights (EMA ones if kept)
    logits = model(images_uint8, training=False)
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging

from transfer_tf.config import ConfigError, ExperimentConfig, load_config
from transfer_tf.errors import UsageError
from transfer_tf.training import checkpoint_health

CHECKPOINT_SUBDIR = "checkpoints"
SUMMARY_SUBDIR = "summaries"
CONFIG_FILE = "config.yaml"


def checkpoint_dir(model_dir: str) -> str:
    return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def has_checkpoint(model_dir: str) -> bool:
    """Whether `model_dir/checkpoints` holds a checkpoint, damaged ones included (a run whose
    newest `.index` is missing still resumes: `checkpoint_health.restore_newest`)."""
    return bool(checkpoint_health.list_checkpoints(checkpoint_dir(model_dir)))


def resolve_checkpoint(path: str) -> str:
    """Accepts a run directory, its `checkpoints/` directory, or a checkpoint prefix
    (`.../ckpt-1000`); returns the checkpoint prefix (a directory's newest, damaged or not).
    UsageError if there is none."""
    if tf.io.gfile.isdir(path):
        for candidate in (checkpoint_dir(path), path):
            found = checkpoint_health.list_checkpoints(candidate)
            if found:
                return found[0]
        raise UsageError(f"checkpoint '{path}': the directory holds no checkpoint")
    if tf.io.gfile.exists(path + ".index") or tf.io.gfile.glob(path + ".data-*"):
        return path  # a prefix without its .index is a damaged checkpoint, told as such
    raise UsageError(f"checkpoint '{path}': no such checkpoint (expected a run dir or ckpt prefix)")


def restore_model_weights(model: keras.Model, path: str, flag: str = "--init_checkpoint") -> str:
    """Restores only the model's variables from a training checkpoint (warm start).

    Every model variable must be in the checkpoint (UsageError otherwise: a silent partial restore
    is a bug); optimizer state and the global step in the file are ignored. A damaged checkpoint
    is a UsageError naming the file and the intact checkpoints beside it (`flag`: how the user
    named `path`). Returns the prefix.
    """
    prefix = resolve_checkpoint(path)
    checkpoint_health.restore_named(
        lambda p: _restore_asserted(tf.train.Checkpoint(model=model), p), prefix, flag
    )
    return prefix


def _restore_asserted(checkpoint: tf.train.Checkpoint, prefix: str) -> None:
    """Restores `prefix` into `checkpoint`; every object of `checkpoint` must be in the file."""
    checkpoint_health.restore_asserted(checkpoint, prefix, "does not fit the model")


def has_ema(prefix: str) -> bool:
    """Whether the training checkpoint `prefix` holds weight EMA averages (training/ema.py)."""
    return any(name.startswith("ema/") for name, _ in tf.train.list_variables(prefix))


def read_run_config(model_dir: str) -> ExperimentConfig:
    """Loads `model_dir/config.yaml` (UsageError if the run has none)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise UsageError(f"--model_dir '{model_dir}': no {CONFIG_FILE} (not a training run)")
    try:
        return load_config(path)
    except ConfigError as e:
        raise UsageError(f"{path}: {e}") from None


def load_model(
    model_dir: str, checkpoint: str | None = None
) -> tuple[keras.Model, ExperimentConfig]:
    """`load_model_checkpoint` without the prefix it restored."""
    model, cfg, _ = load_model_checkpoint(model_dir, checkpoint)
    return model, cfg


def load_model_checkpoint(
    model_dir: str, checkpoint: str | None = None, flag: str = "--checkpoint"
) -> tuple[keras.Model, ExperimentConfig, str]:
    """Rebuilds the classifier of a run from its config.yaml and restores a checkpoint.

    Args:
      model_dir: a training run directory.
      checkpoint: a checkpoint prefix (`flag` names it in errors); default: the newest checkpoint
        of `model_dir/checkpoints` that restores: a damaged newer one is skipped with a warning
        naming its file (`checkpoint_health`).
    Returns:
      (model, cfg, prefix): the float32 classifier, or the detector / segmenter of a detection /
      segmentation run
      (init_weights is not re-read), the run's config and the checkpoint restored.
      When the checkpoint holds a weight EMA (a pretraining run with `train.ema_decay > 0`, a
      fine-tuning run with `transfer.ema_decay > 0`) the model holds the averages: what the run
      evaluated. The EMA lives next to the model, not in the optimizer, so a float16 run (whose
      optimizer is a LossScaleOptimizer) restores the same way.
    Raises:
      UsageError: no checkpoint, one that lacks a model (or EMA) variable, a damaged `checkpoint`
        (naming the file and the intact ones), or no intact checkpoint at all.
    """
    import dataclasses

    from transfer_tf.models.resnet import build_classifier
    from transfer_tf.training.ema import WeightEMA

    cfg = read_run_config(model_dir)
    newest = resolve_checkpoint(checkpoint or model_dir)
    model_cfg = dataclasses.replace(cfg.model, init_weights="")
    if cfg.transfer.task == "detection":
        from transfer_tf.detection.retinanet import build_retinanet

        model = build_retinanet(model_cfg, cfg.detection, cfg.data.num_classes)
    elif cfg.transfer.task == "segmentation":
        from transfer_tf.segmentation.model import build_segmenter
        from transfer_tf.segmentation.settings import num_segmentation_classes

        model = build_segmenter(model_cfg, cfg.segmentation, num_segmentation_classes(cfg))
    else:
        model = build_classifier(model_cfg, cfg.data.num_classes)

    def restore(prefix: str) -> None:
        if has_ema(prefix):
            ema = WeightEMA(model, decay=0.0)  # restore-only
            _restore_asserted(tf.train.Checkpoint(model=model, ema=ema), prefix)
            ema.copy_to_model()
        else:
            _restore_asserted(tf.train.Checkpoint(model=model), prefix)

    if checkpoint:
        checkpoint_health.restore_named(restore, newest, flag)
        return model, cfg, newest
    prefix = checkpoint_health.restore_newest(restore, os.path.dirname(newest))
    if prefix != newest:
        logging.warning(
            "using %s, the newest intact checkpoint of %s, instead of the damaged %s (%s chooses "
            "another)",
            prefix,
            model_dir,
            os.path.basename(newest),
            flag,
        )
    return model, cfg, prefix
