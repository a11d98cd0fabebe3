"""The Trainer's plug-in point: an objective computes the loss and its metrics, is told after
every optimizer step which global step it was, and adds its state to the run's checkpoint."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.errors import UsageError
from transfer_tf.training import schedules
from transfer_tf.training.loop import Trainer
from transfer_tf.training.optimizers import SGD
from transfer_tf.training.strategy import make_strategy


class Regression:
    """Squared error of a linear model on (x, y) batches; counts steps like a momentum target."""

    metric_names = ("mean_prediction",)

    def __init__(self, model, global_batch_size):
        self.model = model
        self.global_batch_size = global_batch_size
        self.steps_seen = tf.Variable([], shape=[None], dtype=tf.int64, trainable=False)
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint_objects = {"regression_calls": self.calls}

    def replica_loss(self, batch):
        x, y = batch
        pred = self.model(x, training=True)[:, 0]
        loss = tf.nn.compute_average_loss(tf.square(pred - y), global_batch_size=16)
        return loss, {"mean_prediction": tf.reduce_mean(pred)}

    def after_step(self, strategy, step):
        self.calls.assign_add(1)
        self.steps_seen.assign(tf.concat([self.steps_seen, [step]], 0))


def _setup(tmp_path, objective_checkpoint: bool):
    strategy = make_strategy("one_device")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="dense")])
        optimizer = SGD(learning_rate=0.1)
        objective = Regression(model, 16)
    extra = objective.checkpoint_objects if objective_checkpoint else None
    trainer = Trainer(
        model, optimizer, strategy, str(tmp_path), global_batch_size=16, steps_per_execution=3,
        checkpoint_every_steps=6, log_every_steps=3, extra_checkpoint_objects=extra,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5], "float32") + 3.0).astype("float32")

    def data(ctx):
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)

    return trainer, objective, data


def test_an_objective_trains_reports_its_metrics_and_sees_every_step(tmp_path):
    trainer, objective, data = _setup(tmp_path, objective_checkpoint=True)
    first = trainer.train(
        data, end_step=3, lr_schedule=schedules.warmup_constant(0.1), objective=objective
    )
    logs = trainer.train(
        data, end_step=60, lr_schedule=schedules.warmup_constant(0.1), objective=objective
    )
    assert logs["loss"] < 0.1 * first["loss"]  # it learned y = x.w + 3
    assert logs["mean_prediction"] == pytest.approx(3.0, abs=0.5)  # the mean of y
    # after_step saw each global step once, in order, with the step the update was for.
    assert objective.steps_seen.numpy().tolist() == list(range(60))
    # Its state is part of the run's checkpoint: a new run restores the count.
    again, objective2, _ = _setup(tmp_path, objective_checkpoint=True)
    assert again.restore() == 60 and int(objective2.calls.numpy()) == 60


def test_train_takes_exactly_one_of_loss_fn_and_objective(tmp_path):
    trainer, objective, data = _setup(tmp_path, objective_checkpoint=False)
    schedule = schedules.warmup_constant(0.1)
    with pytest.raises(UsageError, match="exactly one of loss_fn and objective"):
        trainer.train(data, end_step=3, lr_schedule=schedule)
    with pytest.raises(UsageError, match="exactly one of loss_fn and objective"):
        trainer.train(
            data, end_step=3, lr_schedule=schedule, objective=objective,
            loss_fn=lambda labels, logits: labels,
        )  # fmt: skip
