"""The one strategy-agnostic custom training loop (no `model.fit`: it fails under
MultiWorkerMirroredStrategy with Keras 3; this loop runs unchanged on one device, mirrored GPUs,
several workers and a TPU).

Example (`training.run_setup.start_run` builds the Trainer from a config):

    with strategy.scope():
        model, optimizer = build_model(cfg), make_optimizer(cfg.train)
    trainer = Trainer(model, optimizer, strategy, model_dir, global_batch_size=1024,
                      weight_decay=1e-4, steps_per_execution=10, ema_decay=0.9999)
    trainer.restore()                     # latest checkpoint of model_dir -> global step (0 if none)
    trainer.train(
        dataset_fn,                       # InputContext -> PER-REPLICA batches (images uint8
                                          #   [b,S,S,3], labels float32 [b,C]); `start_step` kw
        end_step=5000,                    # absolute global step to stop at (phases: cumulative)
        lr_schedule=warmup_cosine(...),   # int64 global step -> float32 LR
        loss_fn=softmax_cross_entropy(0.1),  # (labels, logits) -> per-example loss [b]
        trainable_variables=None,         # default: model.trainable_variables after freezing
        lr_multipliers=None,              # {variable.path: factor} on the learning rate
        phase_start_step=None,            # where this call's phase began (see below)
        steps_per_epoch=1251, eval_fn=None, eval_every_steps=0)
    metrics = trainer.evaluate(eval_dataset_fn, accumulator)   # one pass, any accumulator

Semantics:
- The global step is a checkpointed variable of its own (not the optimizer's iteration count), so
  consecutive `train` calls (phases) continue one step count, one checkpoint directory
  (`model_dir/checkpoints`) and one summary stream (`model_dir/summaries`). Resume = construct
  the same objects, `restore()`, call `train` with the same `end_step`: it continues mid-phase.
- The optimizer is built once over ALL trainable-kind variables (`v.trainable`, even in frozen
  layers) and an objective's `extra_variables` (SSL heads), so any subset can train per call.
- Optimizer state is per phase: `train(..., phase_start_step=S)` starts the optimizer afresh
  unless its state already belongs to the phase starting at S (`optimizers.start_phase`; the
  checkpoint records that start as `optimizer_start_step`, so a mid-phase resume keeps Adam's
  moments and a schedule changed under a checkpoint is an error). Pretraining simply continues.
- `lr_multipliers` scale the learning rate of those variables (`PhaseAware.set_lr_multipliers`):
  the whole update, under SGD and Adam alike (a scaled gradient is normalised away by Adam).
- Weight EMA (`ema_decay > 0`): a `training.ema.WeightEMA` over the model's weights, updated after
  every step with Model Garden's warm-up decay `min(d, (1 + t) / (10 + t))`, started from the
  weights the first `train` call sees, checkpointed as `ema`, and swapped in by `evaluate`. One
  EMA per run: it continues across phases.
- Restores assert that the checkpoint holds every object this run expects (model, optimizer, step,
  EMA...): a mismatch is a UsageError naming the checkpoint, never a silent partial restore.
- Freezing: set `layer.trainable = False` before `train`; Keras 3 BatchNormalization then runs in
  inference mode even under `training=True` (tests/test_models.py). To train a frozen layer's BN
  statistics but not its weights, keep it trainable and leave it out of `trainable_variables`.
- Loss = `compute_average_loss(per_example, global_batch_size)` + `scale_regularization_loss(wd *
  sum(l2_loss(kernel)))` over the trained kernels; float16 uses the optimizer's loss scaling.
- Only the chief writes checkpoints and summaries; other workers save to a local temp directory
  that is deleted (the save ops are collective, so every worker must run them).
- A non-finite loss stops the run with `TrainingDivergedError` before anything is saved: the last
  good checkpoint stays the latest.
- Faults (`checkpoint_health`, `signals`): `restore` skips a damaged newest checkpoint for the
  newest one that restores (warning; the chief moves the damaged files to
  `checkpoints/damaged/`); a save that fails (disk full, read-only) removes its partial files and
  raises OutputError; after SIGINT/SIGTERM inside `run_guard.guarded_run` the loop saves at the
  step it reached and raises `signals.RunInterrupted`.
- One input stream per run: every `train` call builds its iterator with
  `dataset_fn(ctx, start_step=<global step>)` when `dataset_fn` takes a `start_step` keyword
  (`data.dataset_fn.dataset_fn` does; `data.input.build_dataset` positions the stream there), so phases
  continue the stream and a resumed run continues where its checkpoint left off. A `dataset_fn`
  without that keyword restarts its stream on every call.
- `checkpoint_input=True` also checkpoints the input iterator (its shuffle buffer and prefetched
  elements too, which are large at ImageNet scale, hence off by default).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from transfer_tf.errors import UsageError
from transfer_tf.training import checkpoint_health, optimizers, preemption, signals
from transfer_tf.training import steps as steps_lib
from transfer_tf.training import strategy as strategy_lib
from transfer_tf.training.ema import WeightEMA
from transfer_tf.training.evaluation import DatasetFn, evaluate_model
from transfer_tf.training.hooks import Hook
from transfer_tf.training.losses import LossFn
from transfer_tf.training.objectives import Objective, Supervised
from transfer_tf.training.schedules import Schedule


class TrainingDivergedError(UsageError):
    """The loss became NaN/Inf; the message names the step and the last good checkpoint."""


class Trainer:
    """Owns the global step, the checkpoint manager and the compiled train/eval steps."""

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        model_dir: str,
        *,
        global_batch_size: int,
        weight_decay: float = 0.0,
        steps_per_execution: int = 1,
        jit_compile: bool = False,
        checkpoint_every_steps: int = 1000,
        keep_checkpoints: int = 5,
        log_every_steps: int = 100,
        hooks: list[Hook] | None = None,
        checkpoint_input: bool = False,
        extra_checkpoint_objects: dict | None = None,
        extra_variables: list | None = None,
        ema_decay: float = 0.0,
    ):
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.model_dir = model_dir
        self.global_batch_size = global_batch_size
        self.weight_decay = weight_decay
        self.steps_per_execution = max(1, steps_per_execution)
        self.jit_compile = jit_compile
        self.checkpoint_every_steps = checkpoint_every_steps
        self.log_every_steps = log_every_steps
        self.hooks = list(hooks or [])
        self.checkpoint_input = checkpoint_input
        self.write_dir = strategy_lib.worker_dir(model_dir, strategy)
        self.checkpoint_dir = os.path.join(self.write_dir, "checkpoints")
        self.keep_checkpoints = keep_checkpoints
        self._extra = dict(extra_checkpoint_objects or {})
        strategy_lib.per_replica_batch_size(global_batch_size, strategy)
        with strategy.scope():
            self.global_step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # The global step at which the optimizer's state was last reset (its phase's start).
            self.optimizer_start_step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="optimizer_start_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # Every trainable-kind variable, so later phases may train any subset; with an
            # objective's own (e.g. SSL heads: `extra_variables`, trained via `train`'s
            # `trainable_variables`).
            extra = [v for v in extra_variables or [] if v.trainable]
            optimizer.build([v for v in model.weights if v.trainable] + extra)
            self.ema = WeightEMA(model, ema_decay) if ema_decay > 0 else None
        self._iterator = None
        self._preemption = None  # PreemptionCheckpointHandler on several workers, False: none
        self._restored: str | None = None  # the prefix `restore` used
        self._manager = self._make_manager()

    # -- checkpoints -----------------------------------------------------------------------
    def _make_manager(self) -> tf.train.CheckpointManager:
        objects = dict(
            model=self.model,
            optimizer=self.optimizer,
            global_step=self.global_step,
            optimizer_start_step=self.optimizer_start_step,
        )
        if self.ema is not None:
            objects["ema"] = self.ema
        objects.update(self._extra)
        if self._iterator is not None and self.checkpoint_input:
            objects["train_iterator"] = self._iterator
        self.checkpoint = tf.train.Checkpoint(**objects)
        return tf.train.CheckpointManager(
            self.checkpoint, self.checkpoint_dir, max_to_keep=self.keep_checkpoints
        )

    @property
    def step(self) -> int:
        return int(self.global_step.numpy())

    def restore(self) -> int:
        """Restores the newest checkpoint of `model_dir` that restores (a damaged newer one is
        warned about and, on the chief, moved to `checkpoints/damaged/`); returns the global step
        (0 without a checkpoint)."""
        latest = checkpoint_health.restore_newest(
            self._restore_checked,
            os.path.join(self.model_dir, "checkpoints"),
            set_aside=strategy_lib.is_chief(self.strategy),
        )
        if latest:
            self._restored = latest
            self._manager = self._make_manager()  # the state file may have been rewritten
            logging.info("resumed from %s at step %d", latest, self.step)
        return self.step

    def _restore_checked(self, prefix: str) -> None:
        """Restores `prefix`; it must hold every object of this run's checkpoint."""
        checkpoint_health.restore_asserted(
            self.checkpoint,
            prefix,
            "does not match this run (model, optimizer, EMA or input settings changed?)",
        )

    def save(self) -> str | None:
        """Saves a checkpoint at the current global step (no-op if one exists for it). A failed
        write removes its debris and raises OutputError (`checkpoint_health.save_or_clean`)."""
        latest = self._manager.latest_checkpoint
        if latest and latest.endswith(f"-{self.step}"):
            return latest
        return checkpoint_health.save_or_clean(self._manager, self.step)

    # -- steps -------------------------------------------------------------------------------
    def compiled_steps(
        self, objective: Objective, lr_schedule: Schedule, variables: list
    ) -> Callable:
        """The tf.function that runs `num_steps` optimizer steps (`training.steps`; what `train`
        runs, and what the autotune probe times)."""
        return steps_lib.compiled_steps(self, objective, lr_schedule, variables)

    # -- public ------------------------------------------------------------------------------
    def train(
        self,
        dataset_fn: DatasetFn,
        *,
        end_step: int,
        lr_schedule: Schedule,
        loss_fn: LossFn | None = None,
        objective: Objective | None = None,
        trainable_variables: list | None = None,
        lr_multipliers: dict[str, float] | None = None,
        phase_start_step: int | None = None,
        steps_per_epoch: int | None = None,
        eval_fn: Callable[[int], dict] | None = None,
        eval_every_steps: int = 0,
    ) -> dict:
        """Trains from the current global step to `end_step`; returns the last logs.

        Checkpoints every `checkpoint_every_steps`, at epoch ends (`steps_per_epoch`) and at the end.
        `eval_fn(step)` runs every `eval_every_steps` and at the end (its metrics go to the hooks).
        `lr_multipliers` ({variable.path: factor}) scale those variables' learning rate;
        `phase_start_step` gives this call's optimizer state its phase (see module doc).
        Raises TrainingDivergedError on a non-finite loss; UsageError when the optimizer state of
        the checkpoint belongs to another phase.
        """
        start = self.step
        if start >= end_step:
            logging.info("global step %d already >= end_step %d: nothing to train", start, end_step)
            return {}
        variables = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(self.model.trainable_variables)
        )
        if not variables:
            raise UsageError("nothing to train: every layer of the model is frozen")
        if self._preemption is None:
            handler = preemption.handler_for(self.strategy, self.save)
            self._preemption = handler or False
        self._start_phase(phase_start_step, start, variables, lr_multipliers or {})
        # The stream continues at the global step: phases and resumes do not replay it.
        self._iterator = strategy_lib.train_iterator(
            self.strategy, dataset_fn, start_step=start, checkpointable=self.checkpoint_input
        )
        if self.checkpoint_input:
            # The iterator joins the checkpoint; restore its position if the latest save has it.
            self._manager = self._make_manager()
            latest = self._restored or self._manager.latest_checkpoint
            if latest and start > 0:
                self._restore_checked(latest)
        if (objective is None) == (loss_fn is None):
            raise UsageError("Trainer.train needs exactly one of loss_fn and objective")
        objective = objective or Supervised(self.model, loss_fn, self.global_batch_size)
        train_steps = self.compiled_steps(objective, lr_schedule, variables)
        for hook in self.hooks:
            hook.on_train_begin(self, start, end_step)
        boundaries = [self.checkpoint_every_steps, self.log_every_steps]
        if steps_per_epoch:
            boundaries.append(steps_per_epoch)
        if eval_every_steps and eval_fn:
            boundaries.append(eval_every_steps)
        logs: dict = {}
        step = start
        while step < end_step:
            self._stop_if_requested(start, step)
            # Run up to the next boundary so checkpoints/logs land on exact steps.
            n = min(self.steps_per_execution, end_step - step)
            for b in boundaries:
                if b and b > 0:
                    n = min(n, b - step % b)
            t0 = time.perf_counter()
            lr = float(lr_schedule(tf.constant(step, tf.int64)))
            loss, total, metrics = self._run_steps(train_steps, n)
            loss, total = float(loss), float(total)
            elapsed = time.perf_counter() - t0
            step = self.step
            if not (np.isfinite(loss) and np.isfinite(total)):
                last = self._manager.latest_checkpoint or "none"
                raise TrainingDivergedError(
                    f"loss became {loss} at global step {step} (lr {lr:.4g}); stopped without "
                    f"saving; last good checkpoint: {last}"
                )
            logs = {
                "loss": loss,
                "total_loss": total,
                "learning_rate": lr,
                "images_per_sec": n * self.global_batch_size / elapsed,
                "step_time_ms": 1000.0 * elapsed / n,
                **{name: float(value) for name, value in metrics.items()},
            }
            for hook in self.hooks:
                hook.on_execution_end(step, logs)
            at_epoch_end = bool(steps_per_epoch) and step % steps_per_epoch == 0
            if step % self.checkpoint_every_steps == 0 or at_epoch_end or step >= end_step:
                self.save()
            self._stop_if_requested(start, step)  # before an eval: a stop does not wait for it
            if eval_fn and (
                (eval_every_steps and step % eval_every_steps == 0) or step >= end_step
            ):
                metrics = eval_fn(step)
                for hook in self.hooks:
                    hook.on_eval_end(step, metrics)
        for hook in self.hooks:
            hook.on_train_end(step, logs)
        return logs

    def _run_steps(self, train_steps: Callable, n: int):
        """`train_steps` for `n` steps; across several workers through TensorFlow's
        PreemptionCheckpointHandler (`training.preemption`), whose coordinated SIGTERM save
        ends in RunInterrupted here."""
        if not self._preemption:
            return train_steps(self._iterator, tf.constant(n, tf.int32))
        try:
            return self._preemption.run(train_steps, self._iterator, tf.constant(n, tf.int32))
        except preemption.Preempted:
            prefix = os.path.join(self.model_dir, "checkpoints", f"ckpt-{self.step}")
            for hook in self.hooks:
                hook.on_train_end(self.step, {})
            raise signals.RunInterrupted(signal.SIGTERM, self.step, prefix) from None

    def _stop_if_requested(self, start: int, step: int) -> None:
        """After SIGINT/SIGTERM (`signals`): saves at `step` and raises RunInterrupted."""
        signum = signals.requested()
        if signum is None:
            return
        prefix = self.save() if step > start else self._manager.latest_checkpoint
        for hook in self.hooks:  # flush summaries, end the progress line
            hook.on_train_end(step, {})
        raise signals.RunInterrupted(signum, step, prefix)

    def _start_phase(
        self,
        phase_start_step: int | None,
        start: int,
        variables: list,
        lr_multipliers: dict[str, float],
    ) -> None:
        """Optimizer state and LR multipliers for a `train` call starting at global step `start`."""
        optimizers.start_phase(
            self.optimizer,
            self.optimizer_start_step,
            phase_start_step,
            start,
            variables,
            lr_multipliers,
        )
        if self.ema is not None and int(self.ema.num_updates.numpy()) == 0:
            # The average starts at the weights the first update sees (a restored backbone, not
            # the random initialisation the Trainer was built with).
            self.ema.reset(self.strategy)

    def evaluate(self, dataset_fn: DatasetFn, accumulator, model: Callable | None = None) -> dict:
        """`evaluate_model` on this trainer's model, with the EMA weights if EMA is enabled.
        `model`: a callable over the same weights to evaluate instead (e.g. a detector that
        decodes the model's outputs)."""
        model = self.model if model is None else model
        if self.ema is None:
            return evaluate_model(model, self.strategy, dataset_fn, accumulator)
        with self.ema.swapped(self.strategy):
            return evaluate_model(model, self.strategy, dataset_fn, accumulator)

    def close(self) -> None:
        """Removes a non-chief worker's throwaway directory."""
        strategy_lib.cleanup_worker_dir(self.model_dir, self.strategy)
