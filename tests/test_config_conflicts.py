"""Config combinations that used to be resolved silently are errors naming the keys, or are
implemented (issue 13 item 6): preset + phases, warmup longer than the run, label smoothing on a
multi-label run, a schedule with no step budget."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import ConfigError, config_from_dict, load_config
from transfer_tf.errors import UsageError
from transfer_tf.training import losses, schedules
from transfer_tf.training.run_setup import plan_steps
from transfer_tf.transfer import phases as phases_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_CONFIG = os.path.join(ROOT, "configs", "coco_multilabel_resnet50.yaml")


def test_preset_with_phases_is_an_error_naming_both_keys():
    # The shipped COCO config has phases; adding a preset used to ignore the preset silently.
    with pytest.raises(ConfigError, match=r"'transfer.preset'.*'transfer.phases'.*phases=\[\]"):
        load_config(COCO_CONFIG, ["transfer.preset=lp_ft"])
    # The documented way: the preset replaces the phases.
    cfg = load_config(
        COCO_CONFIG, ["transfer.preset=lp_ft", "transfer.phases=[]", "train.epochs=12"]
    )
    phases = phases_lib.resolve_phases(cfg)
    assert [p.name for p in phases] == ["probe", "finetune"]
    assert phases[-1].end_step == phases_lib.schedule_steps(cfg, 12, 0, "train.epochs")


def test_preset_without_a_step_budget_is_an_error():
    # No train.epochs / train.train_steps: it used to inherit a 90-epoch default.
    cfg = load_config(COCO_CONFIG, ["transfer.preset=linear_probe", "transfer.phases=[]"])
    with pytest.raises(ConfigError, match=r"transfer.preset.*train.train_steps.*train.epochs"):
        phases_lib.resolve_phases(cfg)


def test_pretraining_without_a_step_budget_is_an_error():
    cfg = config_from_dict(
        {"data": {"num_train_examples": 1000}, "train": {"global_batch_size": 10}}
    )
    with pytest.raises(UsageError, match=r"train.epochs.*train.train_steps"):
        plan_steps(cfg)
    cfg.train.epochs = 2
    assert plan_steps(cfg) == (100, 200)


def test_pretraining_warmup_is_capped_at_the_run_length():
    # The ImageNet recipe with train_steps=100 warmed up over 5 epochs = 6,255 steps.
    cfg = load_config(
        os.path.join(ROOT, "configs", "imagenet_resnet50.yaml"), ["train.train_steps=100"]
    )
    per_epoch, total = plan_steps(cfg)
    assert (per_epoch, total) == (1251, 100)
    lr = schedules.from_train_config(cfg.train, per_epoch, total)
    peak = 0.1 * 1024 / 256
    # Warmup over the 100 steps (as transfer phases cap warmup_steps at the phase length).
    assert float(lr(tf.constant(50, tf.int64))) == pytest.approx(peak * 50 / 100, rel=1e-5)
    assert float(lr(tf.constant(100, tf.int64))) == pytest.approx(peak, rel=1e-5)
    # An uncapped warmup is untouched.
    lr = schedules.from_train_config(cfg.train, per_epoch, 90 * per_epoch)
    assert float(lr(tf.constant(50, tf.int64))) == pytest.approx(peak * 50 / 6255, rel=1e-5)


def test_multilabel_label_smoothing_is_applied_to_the_sigmoid_loss():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(0, 2, [4, 6]), tf.float32)
    labels = tf.constant(rng.integers(0, 2, [4, 6]), tf.float32)
    plain = losses.for_task("multilabel", 0.0)(labels, logits).numpy()
    smooth = losses.for_task("multilabel", 0.2)(labels, logits).numpy()
    # Keras' binary label smoothing: targets y * (1 - e) + e / 2.
    want = keras.losses.binary_crossentropy(labels, logits, from_logits=True, label_smoothing=0.2)
    np.testing.assert_allclose(smooth, np.asarray(want), rtol=1e-5)
    assert np.all(np.abs(smooth - plain) > 1e-3)
    # pos_weight still weighs the (smoothed) positive term.
    weighted = losses.for_task("multilabel", 0.2, pos_weight=3.0)(labels, logits).numpy()
    soft = labels * 0.8 + 0.1
    per_class = -(
        3.0 * soft * tf.math.log_sigmoid(logits) + (1 - soft) * tf.math.log_sigmoid(-logits)
    )
    np.testing.assert_allclose(weighted, np.mean(per_class, axis=-1), rtol=1e-5)


def test_label_smoothing_out_of_range_is_an_error():
    for key in ("train.label_smoothing", "transfer.label_smoothing"):
        with pytest.raises(ConfigError, match=key):
            load_config(None, [f"{key}=1.5"])
