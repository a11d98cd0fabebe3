"""A resumed run must be the run its checkpoints came from: its resolved config may differ from the
`model_dir/config.yaml` it wrote only where the difference cannot change what is trained.

`check_resume_config` compares the new resolved config with the stored one when `model_dir` holds
a checkpoint (a fresh model_dir, or one with a config.yaml but no checkpoint, is not a resume).
Keys in `RESUME_MAY_CHANGE` may differ (data locations, logging/checkpoint/eval cadence, where the
run executes); any other difference is a UsageError naming each key with its stored and new value,
unless the caller accepts the change deliberately (`--allow_config_change` on pipelines/pretrain.py
and pipelines/finetune.py), e.g. to extend a finished run with a larger `train.train_steps`.

`check_warm_start` applies restore's model checks (`models.weights.check_signature`) to a
pretraining warm start (`train.init_checkpoint`) from another run's checkpoint.

Example:
    check_resume_config(cfg, "runs/r50")                            # before building anything
    check_resume_config(cfg, "runs/r50", allow_change=True)         # logs the accepted changes
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf
from absl import logging

from transfer_tf.config import ExperimentConfig, to_dict
from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import config_signature
from transfer_tf.models.weights import check_signature
from transfer_tf.training.checkpoints import CONFIG_FILE, has_checkpoint, read_run_config

# Dotted keys (or `section.*`) whose change on resume cannot change the trained model.
RESUME_MAY_CHANGE = (
    "name",
    # Where the data lives (the same data under another path or filesystem).
    "data.train_pattern",
    "data.eval_pattern",
    "data.tfds_data_dir",
    "data.tfds_manual_dir",
    "data.label_map_file",
    "data.label_names_file",
    "data.tf_data_service",
    # Parallelism of the input map (tf.data keeps the element order in deterministic mode).
    "data.num_parallel_calls",
    "data.prefetch",
    # Logging, checkpoint and eval cadence.
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.eval_every_epochs",
    # Where the run executes (the global batch and the math stay the same).
    "train.strategy",
    "train.tpu",
    "train.steps_per_execution",
    # Sources read only by a run that has no checkpoint yet.
    "train.init_checkpoint",
    "transfer.init_checkpoint",
    "model.init_weights",
    # Initial values only: a checkpoint holds the gammas (and a run written before the default
    # changed to false resumes under the new default).
    "model.zero_init_residual_gamma",
    # Not used by training.
    "export.*",
    "demo.*",
    # The label-free run's kNN monitor (what is measured, not what is trained).
    "ssl.knn_k",
    "ssl.knn_temperature",
    "ssl.knn_train_pattern",
    "ssl.knn_train_examples",
)


def check_warm_start(model: keras.Model, path: str) -> None:
    """Checks a training checkpoint used as a warm start (`train.init_checkpoint`: a run dir, its
    `checkpoints/` dir or a `ckpt-N` prefix in it) against `model`, from the run's config.yaml:
    model.name, input preprocessing and ResNet variant (v1 and v1.5 have the same variables). A
    checkpoint outside a run dir cannot be checked (logged). Raises UsageError naming the key."""
    path = path.rstrip("/")
    for run_dir in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        if run_dir and tf.io.gfile.exists(os.path.join(run_dir, CONFIG_FILE)):
            check_signature(model, config_signature(read_run_config(run_dir).model), path)
            return
    logging.warning("%s is not inside a run dir: its model config is not checked", path)


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _may_change(key: str) -> bool:
    return any(
        key == allowed or (allowed.endswith(".*") and key.startswith(allowed[:-1]))
        for allowed in RESUME_MAY_CHANGE
    )


# Keys whose `auto` config.yaml records resolved (training/autotune.py): `auto` on resume means
# "what this run chose", never a new choice mid-run.
RESOLVED_AUTO = ("train.mixed_precision", "train.xla")


def config_changes(stored: ExperimentConfig, new: ExperimentConfig) -> dict[str, tuple]:
    """`{dotted key: (stored value, new value)}` for every key that differs and may not."""
    old, cur = _flatten(to_dict(stored)), _flatten(to_dict(new))
    return {
        key: (old.get(key), cur.get(key))
        for key in sorted(set(old) | set(cur))
        if old.get(key) != cur.get(key)
        and not _may_change(key)
        and not (key in RESOLVED_AUTO and cur.get(key) == "auto")
    }


def adopt_recorded_runtime(cfg: ExperimentConfig, model_dir: str) -> ExperimentConfig:
    """`cfg` with `train.mixed_precision/xla: auto` replaced by the values a resumed run recorded
    in its config.yaml (no probe, no precision switch mid-run); unchanged for a fresh run."""
    if not has_checkpoint(model_dir):
        return cfg
    if not tf.io.gfile.exists(os.path.join(model_dir, CONFIG_FILE)):
        return cfg
    recorded = read_run_config(model_dir).train
    train = cfg.train
    if train.mixed_precision == "auto":
        train = dataclasses.replace(train, mixed_precision=recorded.mixed_precision)
    if train.xla == "auto":
        train = dataclasses.replace(train, xla=recorded.xla)
    return dataclasses.replace(cfg, train=train)


def check_resume_config(
    cfg: ExperimentConfig, model_dir: str, *, allow_change: bool = False
) -> dict[str, tuple]:
    """Compares `cfg` with `model_dir/config.yaml` when `model_dir` holds a checkpoint.

    Returns the accepted changes (empty when nothing changed or this is not a resume).
    Raises:
      UsageError: the run is resumed with changed keys and `allow_change` is False; the message
        names every key with its stored and new value, and the flag that accepts them.
    """
    if not has_checkpoint(model_dir):
        return {}
    if not tf.io.gfile.exists(os.path.join(model_dir, CONFIG_FILE)):
        return {}
    changes = config_changes(read_run_config(model_dir), cfg)
    if not changes:
        return {}
    listed = "; ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, (old, new) in changes.items())
    if not allow_change:
        raise UsageError(
            f"--model_dir '{model_dir}' holds a run whose {CONFIG_FILE} differs in "
            f"{', '.join(changes)} ({listed}); rerun with --allow_config_change to resume with "
            "this change deliberately, or use a new --model_dir"
        )
    logging.warning(
        "resuming %s with a changed config (--allow_config_change): %s", model_dir, listed
    )
    return changes
