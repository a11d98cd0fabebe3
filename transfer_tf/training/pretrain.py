"""Pretraining and evaluation jobs from an ExperimentConfig (what pipelines/pretrain.py and
pipelines/evaluate.py call).

Example:
    cfg = load_config("configs/imagenet_resnet50.yaml", ["train.train_steps=100"])
    logs = run_pretraining(cfg, "runs/r50")           # resumes if runs/r50 has checkpoints
    metrics = evaluate_run("runs/r50")                # top-1/top-5 of the latest checkpoint
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from transfer_tf import metrics
from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.config import ExperimentConfig, save_config
from transfer_tf.distribute.cluster import weights_digest
from transfer_tf.errors import UsageError
from transfer_tf.metrics import MultilabelAccumulator, TopKAccumulator
from transfer_tf.models.resnet import build_classifier
from transfer_tf.training import autotune, checkpoints, losses, optimizers, precision, schedules
from transfer_tf.training import strategy as strategy_lib
from transfer_tf.training.hooks import ProgressHook, SummaryHook
from transfer_tf.training.loop import DatasetFn, Trainer, evaluate_model
from transfer_tf.training.resume import (
    adopt_recorded_runtime,
    check_resume_config,
    check_warm_start,
)

# The precision/XLA decision of a run (autotune.Decision.to_dict), next to config.yaml.
RUNTIME_FILE = "runtime.json"


def setup_runtime(
    cfg: ExperimentConfig,
    strategy: tf.distribute.Strategy | None = None,
    *,
    total_steps: int | None = None,
    compiles: int = 1,
) -> tuple[ExperimentConfig, autotune.Decision]:
    """Resolves `train.mixed_precision/xla: auto` for this machine (autotune.resolve: a cached
    probe; `total_steps` and `compiles` let it weigh compile time against the run's length), then
    seeds, op determinism and the precision policy (before any model is built).

    Returns the config with concrete precision and XLA values (what model_dir/config.yaml
    records) and the decision (what was chosen and why: model_dir/runtime.json).
    """
    cfg, decision = autotune.resolve(cfg, strategy, total_steps=total_steps, compiles=compiles)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision.set_policy(cfg.train.mixed_precision)
    return cfg, decision


def plan_steps(cfg: ExperimentConfig) -> tuple[int | None, int]:
    """Returns (steps_per_epoch or None, total steps) from the train/data config."""
    per_epoch = cfg.data.num_train_examples // cfg.train.global_batch_size
    if cfg.train.train_steps > 0:
        return (per_epoch or None), cfg.train.train_steps
    if cfg.train.epochs <= 0:
        raise UsageError("config: the run has no length: set train.epochs or train.train_steps")
    if per_epoch <= 0:
        raise UsageError(
            "config: set data.num_train_examples (>= train.global_batch_size) or train.train_steps"
        )
    return per_epoch, max(1, int(round(cfg.train.epochs * per_epoch)))


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


def checked_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with its data section checked against the builders' manifests / TFDS ClassLabel
    (data/manifest.py) and `auto` values filled, before any model is built or step runs.

    Raises:
      ConfigError: the config disagrees with what the builders wrote.
    """
    from transfer_tf.data.manifest import check_data_config

    return dataclasses.replace(cfg, data=check_data_config(cfg.data))


def dataset_fn(cfg: ExperimentConfig, split: str, run_id: str = "") -> DatasetFn:
    """InputContext -> per-replica batches of `split` (`train`: shuffled, repeated; `eval`: one pass,
    fixed order), as `(images uint8 [b,S,S,3], labels float32 [b,C])`. The function takes an
    optional `start_step` (the Trainer passes its global step): the train stream starts there.
    `run_id` (the model_dir) names the run's tf.data service job (`input.service_job_name`).

    Raises:
      UsageError: the split's file pattern (`data.train_pattern` / `data.eval_pattern`) is empty.
    """
    from transfer_tf.data.input import build_dataset

    key = "train_pattern" if split == "train" else "eval_pattern"
    if not getattr(cfg.data, key):
        purpose = "train on" if split == "train" else "evaluate on"
        raise UsageError(f"config key 'data.{key}' is empty: nothing to {purpose}")

    def fn(ctx: tf.distribute.InputContext, start_step: int = 0) -> tf.data.Dataset:
        return build_dataset(
            cfg.data,
            split=split,
            global_batch_size=cfg.train.global_batch_size,
            seed=cfg.seed,
            deterministic=cfg.deterministic,
            input_context=ctx,
            run_id=run_id,
            start_step=start_step,
        )

    return fn


def start_run(
    cfg: ExperimentConfig,
    model_dir: str,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    *,
    weight_decay: float,
    checkpoint_input: bool = False,
    ema_decay: float = 0.0,
    runtime: autotune.Decision | None = None,
) -> Trainer:
    """Lays out a training run and returns its Trainer (progress logs; summaries on the chief).

    Writes `config.yaml` into this worker's write directory (`model_dir` on the chief, a temporary
    directory elsewhere; `Trainer.close` removes the latter), and `runtime.json` (the precision/XLA
    decision) when `runtime` is given. `weight_decay` is the L2 coefficient the loop adds to the
    loss (0 where the optimizer applies decay itself); `ema_decay > 0` keeps a weight EMA
    (`train.ema_decay` for pretraining, `transfer.ema_decay` for fine-tuning).
    """
    train_cfg = cfg.train
    write_dir = strategy_lib.worker_dir(model_dir, strategy)
    tf.io.gfile.makedirs(write_dir)
    save_config(cfg, os.path.join(write_dir, checkpoints.CONFIG_FILE))
    if runtime is not None:
        write_json_atomic(os.path.join(write_dir, RUNTIME_FILE), runtime.to_dict())
    hooks = [ProgressHook(train_cfg.log_every_steps)]
    if strategy_lib.is_chief(strategy):
        hooks.append(
            SummaryHook(
                os.path.join(write_dir, checkpoints.SUMMARY_SUBDIR), train_cfg.log_every_steps
            )
        )
    return Trainer(
        model,
        optimizer,
        strategy,
        model_dir,
        global_batch_size=train_cfg.global_batch_size,
        weight_decay=weight_decay,
        steps_per_execution=train_cfg.steps_per_execution,
        jit_compile=train_cfg.xla,
        checkpoint_every_steps=train_cfg.checkpoint_every_steps,
        keep_checkpoints=train_cfg.keep_checkpoints,
        log_every_steps=train_cfg.log_every_steps,
        hooks=hooks,
        checkpoint_input=checkpoint_input,
        ema_decay=ema_decay,
    )


def run_pretraining(
    cfg: ExperimentConfig, model_dir: str, *, allow_config_change: bool = False
) -> dict:
    """Trains `cfg` in `model_dir` (resuming from its latest checkpoint); returns the last logs.

    Writes model_dir/config.yaml, checkpoints/ and summaries/ (chief only). Evaluates on
    `data.eval_pattern` every `train.eval_every_epochs` when it is set. The data config is first
    checked against the builders' manifests (`data.num_classes: auto` is filled from them). A
    resume whose config differs from model_dir/config.yaml is a UsageError unless
    `allow_config_change` (`training.resume.check_resume_config`).
    """
    cfg = checked_config(cfg)
    check_resume_config(cfg, model_dir, allow_change=allow_config_change)
    cfg = adopt_recorded_runtime(cfg, model_dir)
    train_fn = dataset_fn(cfg, "train", run_id=model_dir)
    # The strategy first: MultiWorkerMirroredStrategy configures collective ops, which must
    # happen before any op runs (setup_runtime's seeding initialises the eager context).
    strategy = strategy_lib.make_strategy(cfg.train.strategy, cfg.train.tpu)
    steps_per_epoch, total_steps = plan_steps(cfg)
    cfg, runtime = setup_runtime(cfg, strategy, total_steps=total_steps)
    train_cfg = cfg.train
    with strategy.scope():
        model = build_classifier(cfg.model, cfg.data.num_classes)
        optimizer = optimizers.make_optimizer(train_cfg)
    trainer = start_run(
        cfg,
        model_dir,
        strategy,
        model,
        optimizer,
        weight_decay=optimizers.loss_weight_decay(train_cfg.optimizer, train_cfg.weight_decay),
        checkpoint_input=train_cfg.checkpoint_input,
        ema_decay=train_cfg.ema_decay,
        runtime=runtime,
    )
    start = trainer.restore()
    if start == 0 and train_cfg.init_checkpoint:
        check_warm_start(model, train_cfg.init_checkpoint)
        prefix = checkpoints.restore_model_weights(model, train_cfg.init_checkpoint)
        logging.info("warm start from %s", prefix)

    eval_fn, eval_every = None, 0
    if cfg.data.eval_pattern and train_cfg.eval_every_epochs > 0:
        eval_input = dataset_fn(cfg, "eval")

        def eval_fn(step: int) -> dict:
            return trainer.evaluate(eval_input, EvalAccumulator(cfg))

        eval_every = int(round(train_cfg.eval_every_epochs * (steps_per_epoch or total_steps)))
    peak_schedule = schedules.from_train_config(
        train_cfg, steps_per_epoch or total_steps, total_steps
    )
    try:
        logs = trainer.train(
            train_fn,
            end_step=total_steps,
            lr_schedule=peak_schedule,
            loss_fn=losses.for_task(cfg.data.task, train_cfg.label_smoothing),
            steps_per_epoch=steps_per_epoch,
            eval_fn=eval_fn,
            eval_every_steps=eval_every,
        )
    finally:
        trainer.close()
    # Equal on every worker when the replicas stayed in sync (tests/test_multiworker.py).
    logs["weights_sha256"] = weights_digest(model)
    return logs


def evaluate_run(model_dir: str, checkpoint: str | None = None, eval_pattern: str = "") -> dict:
    """Top-1/top-5 (or mAP for multi-label) of a run's checkpoint on its eval shards."""
    model, cfg = checkpoints.load_model(model_dir, checkpoint)
    if eval_pattern:
        cfg.data.eval_pattern = eval_pattern
    strategy = tf.distribute.get_strategy()
    metrics = evaluate_model(model, strategy, dataset_fn(cfg, "eval"), EvalAccumulator(cfg))
    metrics["checkpoint"] = checkpoints.resolve_checkpoint(checkpoint or model_dir)
    return metrics
