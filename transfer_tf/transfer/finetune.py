"""The fine-tuning job: restore a pretrained backbone, new head, run the freeze/unfreeze schedule.

All phases share one `training.loop.Trainer`, so the global step, `model_dir/checkpoints` and
`model_dir/summaries` are continuous across phases. The phase a run is in is derived from the
global step of its latest checkpoint, so rerunning the same command after a crash resumes in the
phase it died in, at the step of the last checkpoint (the backbone source is only read for a run
that has no checkpoint yet: afterwards the checkpoint holds everything).

    model_dir/config.yaml     resolved config (transfer.init_checkpoint records the source)
    model_dir/schedule.json   the resolved phases (global step ranges, stages, the effective
                              learning_rate and the config's base_learning_rate per 256 images)
    model_dir/checkpoints/    model, optimizer (its state belongs to the current phase), global step,
                              weight EMA when transfer.ema_decay > 0
    model_dir/summaries/      TensorBoard, one stream for all phases

Example:
    cfg = load_config(
        "configs/coco_multilabel_resnet50.yaml",
        ["transfer.preset=lp_ft", "transfer.phases=[]", "train.epochs=12"],
    )
    result = run_finetuning(cfg, "runs/coco_ft", init_checkpoint="runs/pretrain_r50")
    result["eval"]["mAP"]
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.config import ConfigError, ExperimentConfig
from transfer_tf.config_unread import finetune_unread_problem
from transfer_tf.data.dataset_fn import DatasetFn, dataset_fn
from transfer_tf.distribute.cluster import weights_digest
from transfer_tf.training import checkpoints, losses, optimizers
from transfer_tf.training import strategy as strategy_lib
from transfer_tf.training.evaluation import EvalAccumulator
from transfer_tf.training.resume import adopt_recorded_runtime, check_resume_config
from transfer_tf.training.run_guard import guarded_run
from transfer_tf.training.run_setup import build_model, checked_config, setup_runtime, start_run
from transfer_tf.training.schedules import describe_learning_rate
from transfer_tf.transfer import phases as phases_lib
from transfer_tf.transfer import restore, schedule

SCHEDULE_FILE = "schedule.json"
PhaseCallback = Callable[[schedule.Phase, keras.Model], None]


def run_finetuning(
    cfg: ExperimentConfig,
    model_dir: str,
    *,
    init_checkpoint: str | None = None,
    train_dataset_fn: DatasetFn | None = None,
    eval_input_fn: DatasetFn | None = None,
    on_phase_end: PhaseCallback | None = None,
    allow_config_change: bool = False,
    profile_steps: tuple[int, int] | None = None,
) -> dict:
    """Fine-tunes `cfg` in `model_dir`, resuming from its latest checkpoint if it has one.

    Args:
      cfg: the experiment; `transfer.phases` (or `transfer.preset`) is the schedule,
        `transfer.task: detection` trains a RetinaNet (`transfer_tf.detection`: its objective,
        COCOeval metrics), otherwise `data.task` picks the head loss (softmax CE with
        `transfer.label_smoothing`, or sigmoid BCE with `transfer.pos_weight`), `transfer.optimizer/momentum/weight_decay` the optimizer (fresh
        slots and step count per phase), `transfer.ema_decay` the weight EMA (the pretraining
        recipe's `train.ema_decay` is not inherited),
        `train.global_batch_size/strategy/mixed_precision/checkpoint_every_steps` the loop.
      model_dir: run directory (see module doc).
      init_checkpoint: backbone source (overrides `transfer.init_checkpoint`); empty/None with no
        `transfer.init_checkpoint` and no `model.init_weights` = random initialisation (scratch).
      train_dataset_fn / eval_input_fn: InputContext -> per-replica batches `(uint8 [b,S,S,3],
        float32 [b,C])`; default: `data.input.build_dataset` on data.train_pattern/eval_pattern.
      on_phase_end: called with (phase, model) after each phase that ran in this call.
      allow_config_change: resume even if `cfg` differs from model_dir/config.yaml in keys that
        change training (`training.resume`); otherwise that is a UsageError naming them.
      profile_steps: (A, B) writes a TensorBoard profile of global steps A..B.
    Returns:
      {"global_step", "phases": [names run in this call], "eval": metrics of the final model
       (mAP/F1 for multi-label, top-k for single-label), or {} without eval data}.
    Raises:
      UsageError / ConfigError: bad schedule, unreadable, damaged or incompatible backbone source
        (checked before model_dir is created), no data, another run holding model_dir's lock,
        `train.train_steps` / `train.epochs` beside `transfer.phases` (the phases' own lengths
        rule: `config_unread.finetune_unread_problem`).
      signals.RunInterrupted: SIGINT/SIGTERM; a checkpoint holds the step reached.
    """
    # Before anything is read or written: a length key the phases override is a usage error.
    problem = finetune_unread_problem(cfg)
    if problem:
        raise ConfigError(problem)
    if init_checkpoint:
        cfg = dataclasses.replace(
            cfg, transfer=dataclasses.replace(cfg.transfer, init_checkpoint=init_checkpoint)
        )
    cfg = checked_config(cfg)  # the data matches its manifest; `num_classes: auto` filled
    cfg = phases_lib.preset_config(cfg)  # bit_hyperrule's MixUp and zero head
    # A bad schedule or source fails before model_dir is created.
    phases = phases_lib.resolve_phases(cfg)  # adopt_recorded_runtime below changes no phase
    source = cfg.transfer.init_checkpoint
    if source and not checkpoints.has_checkpoint(model_dir):
        restore.check_source(source, flag="--init_checkpoint")
    with guarded_run(model_dir):  # the run lock, the writable check, Ctrl-C / SIGTERM
        return _finetune(
            cfg,
            phases,
            model_dir,
            train_dataset_fn,
            eval_input_fn,
            on_phase_end,
            allow_config_change,
            profile_steps,
        )


def _finetune(
    cfg: ExperimentConfig,
    phases: list[schedule.Phase],
    model_dir: str,
    train_dataset_fn: DatasetFn | None,
    eval_input_fn: DatasetFn | None,
    on_phase_end: PhaseCallback | None,
    allow_config_change: bool,
    profile_steps: tuple[int, int] | None = None,
) -> dict:
    check_resume_config(cfg, model_dir, allow_change=allow_config_change)
    cfg = adopt_recorded_runtime(cfg, model_dir)
    # The strategy first: MultiWorkerMirroredStrategy must configure collective ops before any
    # op runs (setup_runtime's seeding initialises the eager context).
    strategy = strategy_lib.make_strategy(cfg.train.strategy, cfg.train.tpu)
    cfg, runtime = setup_runtime(
        cfg, strategy, total_steps=schedule.total_steps(phases), compiles=len(phases)
    )
    # Transfer has its own optimizer settings; the loop drives the learning rate.
    train_cfg = dataclasses.replace(cfg.train, momentum=cfg.transfer.momentum)
    with strategy.scope():
        model = build_model(cfg)
        optimizer = optimizers.make_optimizer(
            train_cfg, optimizer=cfg.transfer.optimizer, weight_decay=cfg.transfer.weight_decay
        )
    trainer = start_run(
        cfg,
        model_dir,
        strategy,
        model,
        optimizer,
        weight_decay=optimizers.loss_weight_decay(
            cfg.transfer.optimizer, cfg.transfer.weight_decay
        ),
        ema_decay=cfg.transfer.ema_decay,
        runtime=runtime,
        total_steps=schedule.total_steps(phases),  # the progress line's run ETA
        profile_steps=profile_steps,
    )
    if cfg.train.ema_decay > 0 and cfg.transfer.ema_decay != cfg.train.ema_decay:
        logging.info(
            "train.ema_decay=%g is the pretraining recipe's; fine-tuning uses transfer.ema_decay=%g",
            cfg.train.ema_decay,
            cfg.transfer.ema_decay,
        )
    write_dir = strategy_lib.worker_dir(model_dir, strategy)
    write_json_atomic(os.path.join(write_dir, SCHEDULE_FILE), schedule.describe(phases))
    try:
        return _run_phases(
            cfg, trainer, phases, train_dataset_fn, eval_input_fn, on_phase_end, strategy
        )
    finally:
        trainer.close()


def _run_phases(cfg, trainer, phases, train_dataset_fn, eval_input_fn, on_phase_end, strategy):
    model = trainer.model
    detecting = cfg.transfer.task == "detection"
    segmenting = cfg.transfer.task == "segmentation"
    start = trainer.restore()
    if start == 0:
        source = cfg.transfer.init_checkpoint
        if source:
            restore.restore_backbone(model, source, flag="--init_checkpoint")
        elif not cfg.model.init_weights:
            logging.warning("no --init_checkpoint and no model.init_weights: training from scratch")
        if not (detecting or segmenting):  # their heads initialise themselves
            initialize_head(model, cfg.transfer.head_init, cfg.transfer.head_prior)
    end = schedule.total_steps(phases)
    if start >= end:
        logging.info("schedule already complete at global step %d", start)
    train_fn = train_dataset_fn or dataset_fn(cfg, "train", run_id=trainer.model_dir)
    if eval_input_fn is None and cfg.data.eval_pattern:
        eval_input_fn = dataset_fn(cfg, "eval")
    steps_per_epoch = cfg.data.num_train_examples // cfg.train.global_batch_size or None
    loss_fn, objective = None, None
    if detecting:  # keras-cv is imported only by detection runs
        from transfer_tf.detection import evaluation as detection_eval
        from transfer_tf.detection import objective as detection_objective

        objective = detection_objective.Detection(model, cfg.detection)
    elif segmenting:
        from transfer_tf.segmentation import evaluation as segmentation_eval
        from transfer_tf.segmentation.objective import Segmentation

        objective = Segmentation(model)
    else:
        loss_fn = losses.for_task(
            cfg.data.task, cfg.transfer.label_smoothing, cfg.transfer.pos_weight
        )
    ran = []
    for phase in phases:
        if trainer.step >= phase.end_step:
            continue
        logging.info(
            "phase %d/%d '%s' (%s): global steps %d..%d, %s from step %d, lr %s",
            phase.index + 1,
            len(phases),
            phase.name,
            "+".join(phase.trainable_stages),
            phase.start_step,
            phase.end_step,
            "resuming" if trainer.step > phase.start_step else "starting",
            trainer.step,
            _lr_text(phase, cfg),
        )
        variables = schedule.apply_phase(model, phase)
        trainer.train(
            train_fn,
            end_step=phase.end_step,
            lr_schedule=schedule.phase_schedule(phase),
            loss_fn=loss_fn,
            objective=objective,
            trainable_variables=variables,
            lr_multipliers=schedule.lr_multipliers(model, phase) or None,
            phase_start_step=phase.start_step,
            steps_per_epoch=steps_per_epoch,
        )
        ran.append(phase.name)
        if on_phase_end is not None:
            on_phase_end(phase, model)
    metrics = {}
    if eval_input_fn is not None and detecting:
        detector = detection_eval.Detector(model, cfg.detection)
        metrics = trainer.evaluate(eval_input_fn, detection_eval.accumulator_for(cfg), detector)
        logging.info("final eval at step %d: %s", trainer.step, _summary(metrics))
    elif eval_input_fn is not None and segmenting:
        segmenter = segmentation_eval.Segmenter(model, cfg.segmentation)
        metrics = trainer.evaluate(eval_input_fn, segmentation_eval.accumulator_for(cfg), segmenter)
        logging.info("final eval at step %d: %s", trainer.step, _summary(metrics))
    elif eval_input_fn is not None:
        metrics = trainer.evaluate(eval_input_fn, EvalAccumulator(cfg))
        logging.info("final eval at step %d: %s", trainer.step, _summary(metrics))
    return {
        "global_step": trainer.step,
        "phases": ran,
        "eval": metrics,
        # Equal on every worker when the replicas stayed in sync (tests/test_multiworker.py).
        "weights_sha256": weights_digest(model),
    }


def _lr_text(phase: schedule.Phase, cfg: ExperimentConfig) -> str:
    """The phase's effective LR and where it comes from, e.g. "0.0125 (base 0.1 per 256 images,
    batch 32, sgd linear)"."""
    if phase.base_learning_rate is None:
        return f"{phase.learning_rate:g}"
    return describe_learning_rate(
        phase.base_learning_rate, cfg.train.global_batch_size, cfg.transfer.optimizer
    )


def initialize_head(model: keras.Model, head_init: str = "default", head_prior: float = 0.0):
    """Sets the new head's initial weights (a run's first step only; a resumed run keeps its own).

    `head_init="zero"`: kernel and bias 0 (BiT), so every logit starts at 0 (then the bias).
    `head_prior=p > 0`: bias `-log((1 - p) / p)`, so a sigmoid head starts at probability p per
    class (with a zero kernel exactly, with the default kernel on average).
    """
    dense = model.get_layer("head_dense")
    kernel, bias = dense.kernel, dense.bias
    if head_init == "zero":
        kernel.assign(tf.zeros(kernel.shape, kernel.dtype))
        bias.assign(tf.zeros(bias.shape, bias.dtype))
    if head_prior > 0:
        value = -math.log((1.0 - head_prior) / head_prior)
        bias.assign(tf.fill(bias.shape, tf.constant(value, bias.dtype)))
    if head_init != "default" or head_prior > 0:
        logging.info("head init: %s, prior %g", head_init, head_prior)


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
