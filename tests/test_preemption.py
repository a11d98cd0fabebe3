"""Preemption loses no work (issue 33 item 4): SIGTERM (what Vertex AI, GKE and spot VMs send) at a
random step k of a pretraining and of a fine-tuning run writes a checkpoint at the step reached,
exits 143 (the status TensorFlow's own GCE preemption handler exits with, and that Vertex AI and
our GKE JobSet restart on), and the rerun of the same command finishes with the weights of an
uninterrupted run. A SIGTERM that arrives while a checkpoint is written leaves it and the
previous one intact. The runs go through the jobs' own code in this process (the demo's way);
the binaries' exit status 143 on the same path is tests/test_faults.py's."""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from tiny_shards import CLASSES, write_shards

from transfer_tf.training import checkpoint_health

pytestmark = pytest.mark.slow
PRETRAIN_STEPS, PROBE_STEPS, FT_STEPS = 12, 2, 10


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_shards(str(d / "train"), 48, 2, seed=0)
    common = f"""seed: 5
deterministic: true
data:
  train_pattern: {d}/train-*
  num_classes: {CLASSES}
  label_offset: 1
  num_train_examples: 48
  image_size: 32
  shuffle_buffer: 48
  cycle_length: 2
model:
  name: resnet10
"""
    # Checkpoints only at the end: the one a SIGTERM writes is the run's only mid-run checkpoint.
    # Precision and XLA fixed: no timing probe, and no timing-dependent choice between runs.
    train = (
        "  strategy: one_device\n  log_every_steps: 1\n  checkpoint_every_steps: 1000\n"
        "  mixed_precision: none\n  xla: false\n"
    )
    (d / "pretrain.yaml").write_text(
        f"{common}train:\n  global_batch_size: 8\n  train_steps: {PRETRAIN_STEPS}\n"
        f"  base_learning_rate: 0.2\n  warmup_epochs: 0\n{train}"
    )
    (d / "finetune.yaml").write_text(
        f"{common}train:\n  global_batch_size: 8\n{train}transfer:\n  phases:\n"
        f"    - {{name: probe, trainable: head, steps: {PROBE_STEPS}, base_learning_rate: 0.8}}\n"
        f"    - {{name: all, trainable: all, steps: {FT_STEPS}, base_learning_rate: 0.2}}\n"
    )
    from transfer_tf.config import ModelConfig
    from transfer_tf.models.resnet import build_classifier

    build_classifier(ModelConfig(name="resnet10"), CLASSES).save_weights(str(d / "init.weights.h5"))
    return d


class _SigtermAt(logging.Handler):
    """Keeps the run's log lines; sends this process SIGTERM once a progress line reports global
    step >= `step` (the signal then takes the real path: the watcher thread notes it, the loop
    stops). `step=None`: only keeps the lines."""

    def __init__(self, step: int | None):
        super().__init__()
        self.step, self.sent, self.lines = step, False, []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self.step is None:
            return
        match = re.search(r"^step (\d+)/\d+ loss", record.getMessage())
        if match and int(match.group(1)) >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def _run(configs, job: str, run_dir, sigterm_at: int | None = None):
    """Runs `job` in this process like its binary does; returns (its result or the
    RunInterrupted that a SIGTERM at `sigterm_at` raised, its log lines)."""
    from transfer_tf.config import load_config
    from transfer_tf.training.pretrain import run_pretraining
    from transfer_tf.training.signals import RunInterrupted
    from transfer_tf.transfer.finetune import run_finetuning

    cfg = load_config(str(configs / f"{job}.yaml"))
    handler = _SigtermAt(sigterm_at)
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(handler)
    try:
        if job == "pretrain":
            result = run_pretraining(cfg, str(run_dir))
        else:
            init = str(configs / "init.weights.h5")
            result = run_finetuning(cfg, str(run_dir), init_checkpoint=init)
    except RunInterrupted as stopped:
        result = stopped
    finally:
        absl_logger.removeHandler(handler)
    return result, "\n".join(handler.lines)


def _weights(run_dir) -> dict[str, np.ndarray]:
    """The model's variables in the latest checkpoint of `run_dir`."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir / "checkpoints")))
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith("model/")]
    return {n: reader.get_tensor(n) for n in names if "OPTIMIZER_SLOT" not in n}


@pytest.fixture(scope="module")
def preempted(configs, tmp_path_factory):
    """Per job: the uninterrupted run, the run stopped by SIGTERM at a random step, its rerun
    (in this process, one after another, as the demo runs jobs: no TensorFlow import each)."""
    from absl import logging as absl_logging

    root = tmp_path_factory.mktemp("runs")
    rng = random.Random()  # a different k each time: any step must be safe
    totals = {"pretrain": PRETRAIN_STEPS, "finetune": PROBE_STEPS + FT_STEPS}
    stop_at = {job: rng.randint(2, total - 4) for job, total in totals.items()}
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    out = {}
    try:
        for job in totals:
            out[job, "straight"] = _run(configs, job, root / f"{job}_straight")
            out[job, "stopped"] = _run(configs, job, root / f"{job}_stopped", stop_at[job])
            latest = tf.train.latest_checkpoint(str(root / f"{job}_stopped" / "checkpoints"))
            out[job, "latest_after_stop"] = latest
            out[job, "rerun"] = _run(configs, job, root / f"{job}_stopped")
    finally:
        absl_logging.set_verbosity(verbosity)
    return root, stop_at, totals, out


@pytest.mark.parametrize("job", ["pretrain", "finetune"])
def test_sigterm_saves_at_the_step_reached_and_the_rerun_equals_an_uninterrupted_run(
    preempted, job
):
    from transfer_tf.training.signals import RunInterrupted

    root, stop_at, totals, out = preempted
    stopped, text = out[job, "stopped"]
    assert isinstance(stopped, RunInterrupted), text[-3000:]
    # 128 + SIGTERM, what the binaries exit with: retried by Vertex AI and the JobSet.
    assert stopped.signum == signal.SIGTERM and stopped.exit_code == 143
    run_dir = root / f"{job}_stopped"
    assert stop_at[job] <= stopped.step < totals[job], (stop_at[job], stopped.step)
    assert stopped.checkpoint == f"{run_dir}/checkpoints/ckpt-{stopped.step}"
    assert out[job, "latest_after_stop"] == stopped.checkpoint
    assert checkpoint_health.find_damage(stopped.checkpoint) is None

    # The rerun resumed there (not at 0) and finished the run.
    _, text = out[job, "rerun"]
    resumed = f"resumed from {stopped.checkpoint} at step {stopped.step}"
    assert resumed in text, text[-3000:]
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith(f"ckpt-{totals[job]}")
    if job == "finetune":  # the progress line in the probe phase gives the run's ETA too
        _, straight = out[job, "straight"]
        probe_end = f"step {PROBE_STEPS}/{PROBE_STEPS} loss"
        assert re.search(rf"^{probe_end} .* ETA \S+, run \S+$", straight, re.M), straight
    want, got = _weights(root / f"{job}_straight"), _weights(run_dir)
    assert want.keys() == got.keys() and len(want) > 10
    for name, value in want.items():  # the tolerance of tests/test_pretrain.py's resume test
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_sigterm_during_a_checkpoint_write_leaves_it_and_the_previous_one_intact(tmp_path):
    """In process: the signal lands while `save` writes ckpt-2; the write completes, the run
    stops at that step (RunInterrupted, 143), and both checkpoints restore."""
    import keras

    from transfer_tf.training import checkpoint_health, signals
    from transfer_tf.training.loop import Trainer

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        optimizer = keras.optimizers.SGD(0.1)
    trainer = Trainer(model, optimizer, strategy, str(tmp_path), global_batch_size=4)
    trainer.checkpoint_every_steps = 1
    manager_save = trainer._manager.save
    noted = []

    def save_with_a_signal_midway(*args, **kwargs):
        if trainer.step == 2:  # SIGTERM arrives while this checkpoint is being written
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.time() + 30
            while signals.requested() is None and time.time() < deadline:
                time.sleep(0.01)
            noted.append(signals.requested())
        return manager_save(*args, **kwargs)

    trainer._manager.save = save_with_a_signal_midway

    def dataset_fn(ctx):
        x = tf.random.stateless_normal([64, 4], seed=[1, 2])
        y = tf.one_hot(tf.range(64) % 3, 3)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(4)

    def loss(labels, logits):
        return keras.losses.categorical_crossentropy(labels, logits, from_logits=True)

    with signals.StopSignals() as stop, pytest.raises(signals.RunInterrupted) as stopped:
        trainer.train(dataset_fn, end_step=10, lr_schedule=lambda s: 0.1, loss_fn=loss)
    assert noted == [signal.SIGTERM] and stop.signum == signal.SIGTERM
    assert stopped.value.step == 2 and stopped.value.exit_code == 143
    prefixes = checkpoint_health.list_checkpoints(str(tmp_path / "checkpoints"))
    assert [p.rsplit("-", 1)[1] for p in prefixes] == ["2", "1"]
    assert all(checkpoint_health.find_damage(p) is None for p in prefixes)
    assert not any("_temp" in name for name in os.listdir(tmp_path / "checkpoints"))
