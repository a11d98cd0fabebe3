"""Config combinations that used to be resolved silently are errors naming the keys, or are
implemented (issue 13 item 6): preset + phases, warmup longer than the run, label smoothing on a
multi-label run, a schedule with no step budget. Issue 31 item 7: keys a run accepts and never
reads are errors naming the key that rules instead."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import ConfigError, config_from_dict, load_config, to_dict
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


# Issue 31 item 7: a key that the resolved run does not read is an error naming the key that
# rules instead. Sizing the RetinaNet config down with data.image_size or train.train_steps used to
# be accepted and ignored (detection.image_size and the phases' epochs rule).
RETINANET_CONFIG = os.path.join(ROOT, "configs", "coco_retinanet_resnet50.yaml")


@pytest.mark.parametrize(
    "override, rules",
    [
        ("data.image_size=192", "detection.image_size"),
        ("data.eval_crop_fraction=1.0", "detection.image_size"),
        ("data.crop_area_range=[0.5, 1.0]", "detection.scale_jitter"),
        ("data.crop_aspect_range=[1.0, 1.0]", "detection.scale_jitter"),
        ("data.min_object_covered=0.3", "detection.scale_jitter"),
        ("data.random_rotation_degrees=10", "detection.scale_jitter"),
        ("data.color_jitter=[0.4, 0.4, 0.4, 0.1]", "detection.scale_jitter"),
        ("transfer.label_smoothing=0.1", "detection.focal_alpha"),
        ("transfer.pos_weight=2.0", "detection.focal_alpha"),
        ("transfer.threshold=0.3", "detection.score_threshold"),
        ("model.dropout=0.2", "detection.head_convs"),
        ("export.top_k=3", "detection.max_detections"),
        ("export.output_activation=sigmoid", "detection.score_threshold"),
    ],
)
def test_a_detection_run_rejects_the_keys_it_does_not_read(override, rules):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}'.*'transfer.task'.*'{rules}'"):
        load_config(RETINANET_CONFIG, [override])


def test_detection_reads_one_input_size():
    # data.image_size equal to detection.image_size is the same size said twice: accepted.
    cfg = load_config(RETINANET_CONFIG, ["data.image_size=256", "detection.image_size=256"])
    assert cfg.detection.image_size == 256
    with pytest.raises(ConfigError, match=r"'data.image_size' \(192\).*'detection.image_size'"):
        load_config(RETINANET_CONFIG, ["data.image_size=192", "detection.image_size=256"])


@pytest.mark.parametrize("override", ["detection.image_size=256", "detection.force_match=false"])
def test_the_detection_section_is_an_error_outside_detection(override):
    key = override.split("=")[0]
    with pytest.raises(
        ConfigError, match=rf"'{re.escape(key)}'.*'transfer.task' \('classification'\)"
    ):
        load_config(COCO_CONFIG, [override])
    with pytest.raises(ConfigError, match=r"'data.image_size'"):
        load_config(None, ["detection.image_size=256"])  # the classifier's size key


@pytest.mark.parametrize(
    "overrides, key, rules",
    [
        # Explicit phases: each phase has its own learning rate.
        (["transfer.base_learning_rate=0.5"], "transfer.base_learning_rate", r"transfer.phases"),
        (["transfer.finetune_lr_factor=0.5"], "transfer.finetune_lr_factor", r"transfer.phases"),
        # linear_probe has one phase at transfer.base_learning_rate; BiT-HyperRule picks its own LR.
        (
            [
                "transfer.phases=[]",
                "transfer.preset=linear_probe",
                "transfer.finetune_lr_factor=0.5",
            ],
            "transfer.finetune_lr_factor",
            r"transfer.preset",
        ),
        (
            [
                "transfer.phases=[]",
                "transfer.preset=bit_hyperrule",
                "transfer.base_learning_rate=0.5",
            ],
            "transfer.base_learning_rate",
            r"transfer.preset",
        ),
        # Schedules and policies that do not read a key.
        (["train.step_decay_epochs=[10]"], "train.step_decay_epochs", r"train.lr_schedule"),
        (["train.step_decay_rate=0.5"], "train.step_decay_rate", r"train.lr_schedule"),
        (
            ["transfer.phases.0.decay_fractions=[0.5]"],
            r"transfer.phases\[0\].decay_fractions",
            r"transfer.phases\[0\].lr_schedule",
        ),
        (["data.randaugment_magnitude=0.9"], "data.randaugment_magnitude", r"data.augment_policy"),
        (["data.randaugment_layers=3"], "data.randaugment_layers", r"data.augment_policy"),
        # Multi-label (coco schema) keys on a single-label run.
        (
            ["data.schema=classification", "transfer.pos_weight=2"],
            "transfer.pos_weight",
            "data.schema",
        ),
        (
            ["data.schema=classification", "transfer.threshold=0.3"],
            "transfer.threshold",
            "data.schema",
        ),
        (
            ["data.schema=classification", "data.min_object_covered=0.3"],
            "data.min_object_covered",
            "data.schema",
        ),
    ],
)
def test_transfer_and_schedule_keys_that_nothing_reads(overrides, key, rules):
    with pytest.raises(ConfigError, match=rf"'{key}'.*'{rules}"):
        load_config(COCO_CONFIG, overrides)


def test_keys_are_accepted_where_they_are_read():
    lp_ft = ["transfer.phases=[]", "transfer.preset=lp_ft", "train.epochs=4"]
    cfg = load_config(
        COCO_CONFIG,
        [*lp_ft, "transfer.base_learning_rate=0.5", "transfer.finetune_lr_factor=0.2"],
    )
    assert [p.learning_rate for p in phases_lib.resolve_phases(cfg)] == [0.5, pytest.approx(0.1)]
    load_config(None, ["train.lr_schedule=step", "train.step_decay_epochs=[10]"])
    load_config(None, ["data.augment_policy=randaugment", "data.randaugment_layers=3"])
    load_config(COCO_CONFIG, ["transfer.pos_weight=2", "data.min_object_covered=0.3"])
    load_config(None, ["ssl.method=simclr", "ssl.temperature=0.2"])
    load_config(None, ["ssl.method=byol", "ssl.momentum_base=0.99"])
    # A supervised (fine-tuning) run never reads the ssl section: a config derived from an SSL
    # recipe may keep that recipe's keys (the pretraining run read them).
    load_config(None, ["ssl.temperature=0.2", "ssl.momentum_base=0.99", "ssl.views=byol"])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["ssl.method=byol", "ssl.temperature=0.2"], "ssl.temperature"),
        (["ssl.method=simclr", "ssl.momentum_base=0.99"], "ssl.momentum_base"),
        (["ssl.method=simclr", "ssl.predictor_widths=[64, 32]"], "ssl.predictor_widths"),
    ],
)
def test_ssl_keys_the_method_does_not_read(overrides, key):
    with pytest.raises(ConfigError, match=rf"'ssl.method'.*'{key}'"):
        load_config(None, overrides)


def test_fine_tuning_with_phases_rejects_the_run_length_keys(tmp_path):
    from transfer_tf.config_unread import finetune_unread_problem
    from transfer_tf.transfer.finetune import run_finetuning

    # The issue's run: --set=train.train_steps=150 was accepted, and the phases' epochs ran.
    sized = load_config(RETINANET_CONFIG, ["train.train_steps=150"])
    with pytest.raises(ConfigError, match=r"'train.train_steps' \(150\).*'transfer.phases'"):
        run_finetuning(sized, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # refused before anything is written
    problem = finetune_unread_problem(load_config(COCO_CONFIG, ["train.epochs=3"]))
    assert "'train.epochs' (3.0)" in problem and "transfer.phases[i].epochs" in problem
    # A preset reads them (its budget); pretraining reads them from a shared config file.
    preset = ["transfer.phases=[]", "transfer.preset=lp_ft", "train.epochs=3"]
    assert finetune_unread_problem(load_config(COCO_CONFIG, preset)) is None
    # The demo's config serves both jobs: its fine-tuning stages drop the pretraining length.
    from transfer_tf.demo import detection, plan

    demo = load_config(os.path.join(ROOT, "configs", "demo.yaml"))
    assert demo.train.epochs > 0
    paths = plan.DemoPaths.under(str(tmp_path / "demo"))
    finetune = plan.finetune_config(demo, paths)
    stage_configs = [finetune, plan.scratch_config(finetune)]
    stage_configs += list(detection.detection_configs(demo, paths).values())
    for stage in stage_configs:
        assert finetune_unread_problem(config_from_dict(to_dict(stage))) is None
