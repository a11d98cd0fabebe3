"""A resumed run's resolved config must match its model_dir/config.yaml beyond paths and cadence
(issue 13 item 8); `--allow_config_change` accepts a change deliberately."""

import pytest
import tensorflow as tf

from transfer_tf.config import config_from_dict, save_config
from transfer_tf.errors import UsageError
from transfer_tf.training.resume import (
    adopt_recorded_runtime,
    check_resume_config,
    config_changes,
)


def _cfg(**train):
    return config_from_dict(
        {
            "data": {"train_pattern": "/old/train-*", "num_train_examples": 64},
            "model": {"name": "resnet18"},
            "train": {"train_steps": 16, "base_learning_rate": 0.2, **train},
        }
    )


def _run_dir(tmp_path, cfg, with_checkpoint=True):
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, str(run / "config.yaml"))
    if with_checkpoint:
        ckpt = tf.train.Checkpoint(step=tf.Variable(4, dtype=tf.int64))
        tf.train.CheckpointManager(ckpt, str(run / "checkpoints"), 1).save(checkpoint_number=4)
    return str(run)


def test_changed_training_keys_are_an_error_naming_them(tmp_path):
    run = _run_dir(tmp_path, _cfg())
    new = _cfg(base_learning_rate=0.4, train_steps=32)
    with pytest.raises(UsageError) as info:
        check_resume_config(new, run)
    message = str(info.value)
    assert "\n" not in message
    for needle in (
        "train.base_learning_rate: 0.2 -> 0.4",
        "train.train_steps: 16 -> 32",
        "--allow_config_change",
    ):
        assert needle in message
    # Accepted deliberately: the changes are returned (and logged), nothing raised.
    assert check_resume_config(new, run, allow_change=True) == {
        "train.base_learning_rate": (0.2, 0.4),
        "train.train_steps": (16, 32),
    }


def test_paths_and_cadence_may_change(tmp_path):
    run = _run_dir(tmp_path, _cfg())
    new = _cfg(log_every_steps=7, checkpoint_every_steps=3, strategy="one_device")
    new.data.train_pattern = "gs://bucket/train-*"
    new.name = "renamed"
    # An initializer matters only before the first checkpoint (issue 29 changed its default).
    new.model.zero_init_residual_gamma = not new.model.zero_init_residual_gamma
    assert check_resume_config(new, run) == {}
    # The model and the data itself may not.
    new.model.resnet_variant = "v1.5"
    new.data.num_train_examples = 65
    assert set(config_changes(_cfg(), new)) == {"model.resnet_variant", "data.num_train_examples"}


def test_no_checkpoint_is_not_a_resume(tmp_path):
    run = _run_dir(tmp_path, _cfg(), with_checkpoint=False)
    assert check_resume_config(_cfg(base_learning_rate=0.4), run) == {}
    assert check_resume_config(_cfg(), str(tmp_path / "fresh")) == {}


def test_auto_resumes_with_the_recorded_precision_and_xla(tmp_path):
    # config.yaml records what `auto` resolved to; rerunning the same command (still `auto`) is
    # the same run, and it keeps the recorded choice rather than probing again.
    run = _run_dir(tmp_path, _cfg(mixed_precision="bfloat16", xla=True))
    rerun = _cfg(mixed_precision="auto", xla="auto")
    assert check_resume_config(rerun, run) == {}
    adopted = adopt_recorded_runtime(rerun, run)
    assert (adopted.train.mixed_precision, adopted.train.xla) == ("bfloat16", True)
    # An explicit value that differs is still a change; a fresh run keeps `auto`.
    with pytest.raises(UsageError, match="train.mixed_precision: 'bfloat16' -> 'none'"):
        check_resume_config(_cfg(mixed_precision="none", xla=True), run)
    fresh = adopt_recorded_runtime(rerun, str(tmp_path / "fresh"))
    assert (fresh.train.mixed_precision, fresh.train.xla) == ("auto", "auto")
