"""A run you can watch (issue 33 item 5): the ETA in the progress line, the resolved config as
TensorBoard HParams, `--profile_steps=A,B`, and `pipelines.evaluate --continuous` (each new
checkpoint evaluated as it appears, TensorBoard eval summaries, stop at the final step or after
a timeout). One tiny pretraining run in this process serves them all."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil

import pytest
import tensorflow as tf
from tiny_shards import CLASSES, write_shards

from transfer_tf.errors import UsageError
from transfer_tf.training import hooks
from transfer_tf.training.hooks import ProgressHook, format_duration

STEPS = 6


def test_the_progress_line_gives_the_phase_and_run_eta(monkeypatch):
    assert [format_duration(s) for s in (7, 125, 3 * 3600 + 420, 2 * 86400 + 4 * 3600)] == [
        "7s",
        "2m05s",
        "3h07m",
        "2d04h",
    ]
    now = [0.0]
    hook = ProgressHook(log_every_steps=10, run_end_step=300, clock=lambda: now[0])
    hook.on_train_begin(None, 0, 100)  # phase 0..100 of a run ending at 300
    logs = {"loss": 1.0, "learning_rate": 0.1, "images_per_sec": 8.0, "step_time_ms": 5.0}
    # The hook's own log calls, not caplog: an earlier test in the same worker may have routed
    # absl's records away from the root logger.
    said: list[str] = []
    monkeypatch.setattr(hooks.logging, "info", lambda msg, *a: said.append(msg % a if a else msg))
    hook.on_execution_end(10, logs)  # the first block (tracing): starts the clock
    now[0] = 10.0
    hook.on_execution_end(20, logs)  # 10 steps in 10 s
    lines = [m for m in said if m.startswith("step ")]
    assert lines[0].endswith("ETA ?")
    assert lines[1].endswith("ETA 1m20s, run 4m40s"), lines  # 80 and 280 steps at 1 s/step


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-step pretraining run (checkpoints 2, 4, 6) profiled over steps 2..4; its log lines."""
    from absl import logging as absl_logging

    from transfer_tf.config import load_config
    from transfer_tf.training.pretrain import run_pretraining

    d = tmp_path_factory.mktemp("watch")
    write_shards(str(d / "train"), 32, 2, seed=0)
    write_shards(str(d / "validation"), 8, 1, seed=1)
    (d / "run.yaml").write_text(
        f"""seed: 1
data:
  train_pattern: {d}/train-*
  eval_pattern: {d}/validation-*
  num_classes: {CLASSES}
  label_offset: 1
  num_train_examples: 32
  num_eval_examples: 8
  image_size: 32
  shuffle_buffer: 32
model:
  name: resnet10
train:
  global_batch_size: 8
  train_steps: {STEPS}
  warmup_epochs: 0
  strategy: one_device
  mixed_precision: none
  xla: false
  log_every_steps: 1
  checkpoint_every_steps: 2
  eval_every_epochs: 0
"""
    )
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("absl")
    logger.addHandler(handler)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        run_pretraining(load_config(str(d / "run.yaml")), str(d / "run"), profile_steps=(2, 4))
    finally:
        logger.removeHandler(handler)
        absl_logging.set_verbosity(verbosity)
    return d / "run", lines


def test_training_logs_an_eta_writes_hparams_and_the_profile(run):
    run_dir, lines = run
    progress = [line for line in lines if line.startswith("step ") and f"/{STEPS} loss" in line]
    assert progress[0].endswith("ETA ?") and progress[-1].endswith("ETA 0s"), progress
    hparams = {}
    for path in glob.glob(str(run_dir / "summaries" / "train" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    from tensorboard.plugins.hparams import plugin_data_pb2

                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    hparams.update(data.session_start_info.hparams)
    assert hparams["train.global_batch_size"].number_value == 8
    assert hparams["model.name"].string_value == "resnet10"
    assert json.loads(hparams["data.crop_area_range"].string_value) == [0.08, 1.0]
    profiles = glob.glob(str(run_dir / "summaries" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert profiles, os.listdir(run_dir / "summaries")
    assert any(line.startswith("profiling from global step 2 to 4") for line in lines), lines


def _copy_checkpoint(src_dir, dest_dir, step: int) -> None:
    """What a trainer's save looks like to a reader: the files, then the state file."""
    dest = dest_dir / "checkpoints"
    dest.mkdir(parents=True, exist_ok=True)
    for path in glob.glob(str(src_dir / "checkpoints" / f"ckpt-{step}.*")):
        shutil.copy(path, dest)
    tf.compat.v1.train.update_checkpoint_state(str(dest), str(dest / f"ckpt-{step}"))


def test_continuous_eval_follows_new_checkpoints_to_the_final_step(run, tmp_path):
    from transfer_tf.training.continuous_eval import continuous_evaluate
    from transfer_tf.training.evaluation import evaluate_run

    run_dir, _ = run
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(run_dir / "config.yaml", live)
    _copy_checkpoint(run_dir, live, 2)

    def evaluate_while_training(model_dir, checkpoint, pattern):
        metrics = evaluate_run(model_dir, checkpoint, pattern)
        step = int(checkpoint.rsplit("-", 1)[1])
        if step < STEPS:  # the trainer writes the next checkpoint meanwhile
            _copy_checkpoint(run_dir, live, step + 2)
        return metrics

    results = list(
        continuous_evaluate(str(live), evaluate_while_training, timeout_s=60, poll_s=0.1)
    )
    assert [r["global_step"] for r in results] == [2, 4, 6]  # stopped at the final step
    assert all(0 <= r["top_1_accuracy"] <= 1 and r["num_examples"] == 8 for r in results)
    steps = set()
    for path in glob.glob(str(live / "summaries" / "continuous_eval" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "top_1_accuracy" for v in event.summary.value):
                steps.add(event.step)
    assert steps == {2, 4, 6}


def test_evaluate_continuous_stops_after_the_timeout_and_names_a_run_without_checkpoints(
    run, tmp_path, capsys
):
    from pipelines import evaluate

    run_dir, _ = run
    stalled = tmp_path / "stalled"
    stalled.mkdir()
    shutil.copy(run_dir / "config.yaml", stalled)
    _copy_checkpoint(run_dir, stalled, 2)  # a run that stopped at step 2 of 6
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run_dir / "config.yaml", empty)
    flags = ["--continuous", "--timeout_s=1", "--poll_s=0.1"]
    try:
        evaluate.FLAGS(["evaluate", f"--model_dir={stalled}", *flags])
        assert evaluate.run_from_flags(evaluate.FLAGS, ["evaluate"]) is None
        (line,) = capsys.readouterr().out.strip().splitlines()
        assert json.loads(line)["global_step"] == 2
        assert json.loads((stalled / "eval_metrics.json").read_text())["global_step"] == 2
        evaluate.FLAGS.unparse_flags()
        evaluate.FLAGS(["evaluate", f"--model_dir={empty}", *flags])
        with pytest.raises(UsageError, match="no checkpoint appeared in .* within 1 s"):
            evaluate.run_from_flags(evaluate.FLAGS, ["evaluate"])
    finally:
        evaluate.FLAGS.unparse_flags()
