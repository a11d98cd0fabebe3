"""The pretraining job from an ExperimentConfig (what pipelines/pretrain.py calls).

`ssl.method` picks the objective: `supervised` (the classifier's loss on labels) or a
self-supervised method (`ssl.methods`: two views per image, labels ignored, heads and target
network checkpointed beside the classifier, kNN top-1 instead of top-1 as the periodic eval).
Everything else (strategy, precision, checkpoints, resume) is the same job.

Example:
    cfg = load_config("configs/imagenet_resnet50.yaml", ["train.train_steps=100"])
    logs = run_pretraining(cfg, "runs/r50")           # resumes if runs/r50 has checkpoints
"""

from __future__ import annotations

from absl import logging

from transfer_tf.config import ExperimentConfig
from transfer_tf.data.dataset_fn import dataset_fn
from transfer_tf.distribute.cluster import weights_digest
from transfer_tf.ssl import knn, methods
from transfer_tf.ssl import views as views_lib
from transfer_tf.ssl.settings import is_self_supervised
from transfer_tf.training import checkpoints, losses, optimizers, schedules
from transfer_tf.training import strategy as strategy_lib
from transfer_tf.training.evaluation import EvalAccumulator
from transfer_tf.training.resume import (
    adopt_recorded_runtime,
    check_resume_config,
    check_warm_start,
)
from transfer_tf.training.run_guard import guarded_run
from transfer_tf.training.run_setup import (
    build_model,
    checked_config,
    plan_steps,
    setup_runtime,
    start_run,
)


def run_pretraining(
    cfg: ExperimentConfig,
    model_dir: str,
    *,
    allow_config_change: bool = False,
    profile_steps: tuple[int, int] | None = None,
) -> dict:
    """Trains `cfg` in `model_dir` (resuming from its latest checkpoint); returns the last logs.

    Writes model_dir/config.yaml, checkpoints/ and summaries/ (chief only). Evaluates on
    `data.eval_pattern` every `train.eval_every_epochs` when it is set. The data config is first
    checked against the builders' manifests (`data.num_classes: auto` is filled from them). A
    resume whose config differs from model_dir/config.yaml is a UsageError unless
    `allow_config_change` (`training.resume.check_resume_config`). The job holds model_dir's run
    lock and stops with a checkpoint on SIGINT/SIGTERM (`training.run_guard`). `profile_steps`
    (A, B): a TensorBoard profile of global steps A..B.
    """
    cfg = checked_config(cfg)
    # The lock (and writable check) before anything reads the data or writes model_dir.
    with guarded_run(model_dir):
        return _pretrain(cfg, model_dir, allow_config_change, profile_steps)


def _pretrain(
    cfg: ExperimentConfig,
    model_dir: str,
    allow_config_change: bool,
    profile_steps: tuple[int, int] | None = None,
) -> dict:
    check_resume_config(cfg, model_dir, allow_change=allow_config_change)
    cfg = adopt_recorded_runtime(cfg, model_dir)
    ssl_run = is_self_supervised(cfg)
    views = views_lib.views_fn(cfg) if ssl_run else None
    train_fn = dataset_fn(cfg, "train", run_id=model_dir, views=views)
    # The strategy first: MultiWorkerMirroredStrategy configures collective ops, which must
    # happen before any op runs (setup_runtime's seeding initialises the eager context).
    strategy = strategy_lib.make_strategy(cfg.train.strategy, cfg.train.tpu)
    steps_per_epoch, total_steps = plan_steps(cfg)
    cfg, runtime = setup_runtime(cfg, strategy, total_steps=total_steps)
    train_cfg = cfg.train
    objective = None
    with strategy.scope():
        model = build_model(cfg)
        optimizer = optimizers.make_optimizer(train_cfg)
        if ssl_run:
            objective = methods.make_objective(cfg, model, total_steps)
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
        extra_checkpoint_objects=objective.checkpoint_objects if objective else None,
        extra_variables=objective.head_variables if objective else None,
        profile_steps=profile_steps,
    )
    start = trainer.restore()
    if start == 0 and train_cfg.init_checkpoint:
        check_warm_start(model, train_cfg.init_checkpoint)
        prefix = checkpoints.restore_model_weights(model, train_cfg.init_checkpoint)
        logging.info("warm start from %s", prefix)
    if start == 0 and objective is not None:
        objective.start(strategy)  # BYOL: the target starts as the (warm-started) online net

    eval_fn, eval_every = None, 0
    if cfg.data.eval_pattern and train_cfg.eval_every_epochs > 0:
        if objective is not None:
            eval_fn = _ssl_eval_fn(cfg, objective, strategy)
        else:
            eval_input = dataset_fn(cfg, "eval")

            def eval_fn(step: int) -> dict:
                return trainer.evaluate(eval_input, EvalAccumulator(cfg))

    if eval_fn is not None:
        eval_every = int(round(train_cfg.eval_every_epochs * (steps_per_epoch or total_steps)))
    peak_schedule = schedules.from_train_config(
        train_cfg, steps_per_epoch or total_steps, total_steps
    )
    logging.info(
        "pretraining peak lr %s, %s schedule",
        schedules.describe_learning_rate(
            train_cfg.base_learning_rate, train_cfg.global_batch_size, train_cfg.optimizer
        ),
        train_cfg.lr_schedule,
    )
    try:
        logs = trainer.train(
            train_fn,
            end_step=total_steps,
            lr_schedule=peak_schedule,
            loss_fn=None
            if objective
            else losses.for_task(cfg.data.task, train_cfg.label_smoothing),
            objective=objective,
            trainable_variables=objective.trainable_variables if objective else None,
            steps_per_epoch=steps_per_epoch,
            eval_fn=eval_fn,
            eval_every_steps=eval_every,
        )
    finally:
        trainer.close()
    # Equal on every worker when the replicas stayed in sync (tests/test_multiworker.py).
    logs["weights_sha256"] = weights_digest(model)
    return logs


def _ssl_eval_fn(cfg: ExperimentConfig, objective, strategy):
    """The label-free run's periodic eval: kNN top-1 of the backbone's pooled features
    (`ssl.knn`), or None when `ssl.knn_k` is 0."""
    if cfg.ssl.knn_k <= 0:
        return None
    return knn.knn_monitor(cfg, objective.encoder, strategy)
