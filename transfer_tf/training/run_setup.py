"""Run setup shared by every training job (pretraining, fine-tuning, and the tasks to come):
resolve the runtime, check the data config, build the model, lay out the run directory.

A training job reads top to bottom as: `checked_config` -> `make_strategy` -> `setup_runtime` ->
`build_model` (under the strategy's scope) -> `start_run` -> `Trainer.restore` / `Trainer.train`.

Example:
    cfg = checked_config(cfg)
    strategy = strategy_lib.make_strategy(cfg.train.strategy, cfg.train.tpu)
    cfg, runtime = setup_runtime(cfg, strategy, total_steps=plan_steps(cfg)[1])
    with strategy.scope():
        model = build_model(cfg)
        optimizer = optimizers.make_optimizer(cfg.train)
    trainer = start_run(cfg, "runs/x", strategy, model, optimizer, weight_decay=1e-4)
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf
from absl import logging

from transfer_tf import cloud_env
from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.config import ConfigError, ExperimentConfig, save_config, to_dict
from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import build_classifier
from transfer_tf.ssl.settings import is_self_supervised
from transfer_tf.training import autotune, checkpoints, precision
from transfer_tf.training import strategy as strategy_lib
from transfer_tf.training.hooks import ProfileHook, ProgressHook, SummaryHook
from transfer_tf.training.loop import Trainer

# The precision/XLA decision of a run (autotune.Decision.to_dict), next to config.yaml.
RUNTIME_FILE = "runtime.json"
# The decision's keys that say how a run computed (a resume that differs in one is recorded).
RUNTIME_KEYS = ("hardware", "mixed_precision", "xla")


def setup_runtime(
    cfg: ExperimentConfig,
    strategy: tf.distribute.Strategy | None = None,
    *,
    total_steps: int | None = None,
    compiles: int = 1,
) -> tuple[ExperimentConfig, autotune.Decision]:
    """Resolves `train.mixed_precision/xla: auto` for this machine (autotune.resolve: a cached
    probe; `total_steps` and `compiles` let it weigh compile time against the run's length), then
    seeds (Keras, NumPy, Python and TF's global generator), op determinism and the precision
    policy (before any model is built).

    Returns the config with concrete precision and XLA values (what model_dir/config.yaml
    records) and the decision (what was chosen and why: model_dir/runtime.json).
    """
    cfg, decision = autotune.resolve(cfg, strategy, total_steps=total_steps, compiles=compiles)
    keras.utils.set_random_seed(cfg.seed)
    # keras-cv's policy layers draw from TF's global generator, which TF refuses to create once op
    # determinism is on: creating (or re-seeding) it here, first, makes `deterministic: true` runs
    # with a policy work, and makes every run's global draws follow `seed`. Re-seeding rather than
    # replacing keeps functions that captured it (an earlier job in this process) on the same one.
    try:
        tf.random.get_global_generator().reset_from_seed(cfg.seed)
    except RuntimeError:  # op determinism already on (set outside a run) and no generator yet
        tf.random.set_global_generator(tf.random.Generator.from_seed(cfg.seed))
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


def checked_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with its data section checked against the builders' manifests / TFDS ClassLabel
    (data/manifest.py) and `auto` values filled, before any model is built or step runs.

    Raises:
      ConfigError: the config disagrees with what the builders wrote, or supervised training on
        shards built without labels.
    """
    from transfer_tf.data.manifest import check_data_config, unlabeled_manifest

    data = check_data_config(cfg.data)
    unlabeled = None if is_self_supervised(cfg) else unlabeled_manifest(data.train_pattern)
    if unlabeled:
        raise ConfigError(
            f"config key 'data.train_pattern': {unlabeled} says these shards have no labels "
            "(make_folder_tfrecords --unlabeled): pretrain them with ssl.method: simclr | byol"
        )
    return dataclasses.replace(cfg, data=data)


def build_model(cfg: ExperimentConfig) -> keras.Model:
    """The run's classifier (`models.resnet.build_classifier`, `data.num_classes` wide), or its
    detector for `transfer.task: detection` (`detection.retinanet.build_retinanet`; segmentation:
    `segmentation.model.build_segmenter`), with the
    backbone of `model.init_weights` when set (strictly: `models.weights.load_backbone_weights`).

    Call under the strategy's scope, after `setup_runtime` (the precision policy).
    Raises:
      UsageError: unknown model, or an `init_weights` file that does not fit the model.
    """
    if cfg.transfer.task == "detection":
        from transfer_tf.detection.retinanet import build_retinanet  # keras-cv only when used

        model = build_retinanet(cfg.model, cfg.detection, cfg.data.num_classes)
    elif cfg.transfer.task == "segmentation":
        from transfer_tf.segmentation.model import build_segmenter
        from transfer_tf.segmentation.settings import num_segmentation_classes

        model = build_segmenter(cfg.model, cfg.segmentation, num_segmentation_classes(cfg))
    else:
        model = build_classifier(cfg.model, cfg.data.num_classes)
    if cfg.model.init_weights:
        from transfer_tf.models.weights import load_backbone_weights  # h5py only when used

        load_backbone_weights(model, cfg.model.init_weights)
    return model


def record_runtime(path: str, runtime: autotune.Decision) -> None:
    """Writes a run's precision/XLA decision to `path` (runtime.json).

    A rerun of an existing run (a resume, or a finished run reopened) keeps the decision the run
    started with and appends its own to `resumes` only when hardware, precision or XLA differ, so
    the file says what every part of the run ran on rather than what the last process saw.
    """
    record = runtime.to_dict()
    first = None
    if tf.io.gfile.exists(path):
        try:
            with tf.io.gfile.GFile(path) as f:
                first = json.load(f)
        except ValueError as e:
            logging.warning("%s is not JSON (%s): rewritten with this run's decision", path, e)
    if isinstance(first, dict):
        resumes = first.pop("resumes", [])
        last = resumes[-1] if resumes else first
        if any(record[k] != last.get(k) for k in RUNTIME_KEYS):
            resumes.append(record)
        record = {**first, "resumes": resumes} if resumes else first
    write_json_atomic(path, record)


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
    extra_checkpoint_objects: dict | None = None,
    extra_variables: list | None = None,
    total_steps: int | None = None,
    profile_steps: tuple[int, int] | None = None,
) -> Trainer:
    """Lays out a training run and returns its Trainer (progress logs; summaries on the chief).

    Writes `config.yaml` into this worker's write directory (`model_dir` on the chief, a temporary
    directory elsewhere; `Trainer.close` removes the latter), and `runtime.json` (the precision/XLA
    decision) when `runtime` is given. `weight_decay` is the L2 coefficient the loop adds to the
    loss (0 where the optimizer applies decay itself); `ema_decay > 0` keeps a weight EMA
    (`train.ema_decay` for pretraining, `transfer.ema_decay` for fine-tuning).
    `extra_checkpoint_objects` / `extra_variables`: an objective's state and the trainable
    variables it adds to the model's (`Trainer`; e.g. `ssl.methods`). `total_steps`: the run's
    last step when it spans several `train` calls (phases), for the progress line's run ETA.
    `profile_steps` (A, B): a TensorBoard profile of global steps A..B (chief only). The chief
    also writes the resolved config as TensorBoard HParams.
    """
    train_cfg = cfg.train
    write_dir = strategy_lib.worker_dir(model_dir, strategy)
    tf.io.gfile.makedirs(write_dir)
    save_config(cfg, os.path.join(write_dir, checkpoints.CONFIG_FILE))
    if runtime is not None:
        record_runtime(os.path.join(write_dir, RUNTIME_FILE), runtime)
    hooks = [ProgressHook(train_cfg.log_every_steps, run_end_step=total_steps)]
    if strategy_lib.is_chief(strategy):
        # AIP_TENSORBOARD_LOG_DIR when Vertex AI sets it (its TensorBoard reads only there).
        summaries = cloud_env.summary_dir(write_dir)
        logging.info("TensorBoard summaries: %s", summaries)
        summary_hook = SummaryHook(summaries, train_cfg.log_every_steps)
        summary_hook.write_hparams(to_dict(cfg))
        hooks.append(summary_hook)
        if profile_steps:
            hooks.append(ProfileHook(*profile_steps, summaries))
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
        extra_checkpoint_objects=extra_checkpoint_objects,
        extra_variables=extra_variables,
        ema_decay=ema_decay,
    )
