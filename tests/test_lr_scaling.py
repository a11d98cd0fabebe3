"""Every learning rate in a config is per 256 images and follows the global batch by one rule
(issue 29 item 4): x B/256 for sgd/lars, x sqrt(B/256) for adam/adamw."""

import math
import os
import re

import pytest
import tensorflow as tf
import yaml

from transfer_tf.benchmarks import detection as detection_bench
from transfer_tf.benchmarks import ssl as ssl_bench
from transfer_tf.benchmarks import transfer as transfer_bench
from transfer_tf.benchmarks import transfer_photos as photos_bench
from transfer_tf.config import ConfigError, TrainConfig, config_from_dict, load_config, to_dict
from transfer_tf.demo import detection as demo_detection
from transfer_tf.demo import plan
from transfer_tf.errors import UsageError
from transfer_tf.training import checkpoints, schedules
from transfer_tf.training.resume import check_resume_config
from transfer_tf.transfer import finetune, schedule
from transfer_tf.transfer import phases as phases_lib

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

SMALL, LARGE = 8, 256


def test_peak_learning_rate_is_linear_for_sgd_and_square_root_for_adam():
    for optimizer in ("sgd", "lars", "adam", "adamw"):
        # At the reference batch every optimizer trains at the written number.
        assert schedules.peak_learning_rate(0.3, 256, optimizer) == 0.3
    assert schedules.peak_learning_rate(0.1, 32, "sgd") == pytest.approx(0.0125)
    assert schedules.peak_learning_rate(0.1, 1024, "lars") == pytest.approx(0.4)
    assert schedules.peak_learning_rate(1e-3, 1024, "adam") == pytest.approx(2e-3)
    assert schedules.peak_learning_rate(1e-3, 64, "adamw") == pytest.approx(5e-4)
    for optimizer in ("sgd", "adam"):
        base = schedules.base_learning_rate_for(0.1, 32, optimizer)
        assert schedules.peak_learning_rate(base, 32, optimizer) == pytest.approx(0.1)
    assert schedules.base_learning_rate_for(0.1, 32, "sgd") == pytest.approx(0.8)
    with pytest.raises(ValueError, match="rmsprop"):
        schedules.peak_learning_rate(0.1, 32, "rmsprop")
    assert schedules.describe_learning_rate(0.1, 32, "sgd") == (
        "0.0125 (base 0.1 per 256 images, batch 32, sgd linear)"
    )


def _pretraining_peak(optimizer: str, batch: int) -> float:
    train = TrainConfig(
        global_batch_size=batch, base_learning_rate=0.1, optimizer=optimizer, warmup_epochs=0
    )
    schedule = schedules.from_train_config(train, steps_per_epoch=10, total_steps=100)
    return float(schedule(tf.constant(0, tf.int64)))


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_pretraining_sgd_takes_the_same_step_per_image_at_any_batch(optimizer):
    small, large = _pretraining_peak(optimizer, SMALL), _pretraining_peak(optimizer, LARGE)
    assert large == pytest.approx(0.1)
    assert small / SMALL == pytest.approx(large / LARGE)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_pretraining_adam_scales_with_the_square_root_of_the_batch(optimizer):
    # Before issue 29 pretraining scaled adam/adamw linearly too (ratio 32, not sqrt(32)).
    small, large = _pretraining_peak(optimizer, SMALL), _pretraining_peak(optimizer, LARGE)
    assert large == pytest.approx(0.1)
    assert large / small == pytest.approx(math.sqrt(LARGE / SMALL))


# -- transfer phases and presets --------------------------------------------------------------


def _transfer_cfg(batch: int, optimizer: str = "sgd", **transfer):
    return config_from_dict(
        {
            "data": {"num_train_examples": 4096, "num_classes": 5},
            "train": {"global_batch_size": batch, "train_steps": 40},
            "transfer": {"optimizer": optimizer, **transfer},
        }
    )


PHASES = [
    {"name": "probe", "trainable": "head", "steps": 10, "base_learning_rate": 0.1},
    {"name": "all", "trainable": "all", "steps": 10, "base_learning_rate": 0.01},
]


@pytest.mark.parametrize(
    "transfer",
    [{"phases": PHASES}, {"preset": "lp_ft", "base_learning_rate": 0.1}],
    ids=["phases", "preset"],
)
def test_transfer_sgd_takes_the_same_step_per_image_at_batch_8_and_256(transfer):
    small = phases_lib.resolve_phases(_transfer_cfg(SMALL, **transfer))
    large = phases_lib.resolve_phases(_transfer_cfg(LARGE, **transfer))
    assert [p.learning_rate for p in large] == pytest.approx([0.1, 0.01])  # as written
    for s, big in zip(small, large, strict=True):
        assert s.base_learning_rate == big.base_learning_rate
        assert s.learning_rate / SMALL == pytest.approx(big.learning_rate / LARGE)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize(
    "transfer",
    [{"phases": PHASES}, {"preset": "lp_ft", "base_learning_rate": 0.1}],
    ids=["phases", "preset"],
)
def test_transfer_adam_scales_with_the_square_root_of_the_batch(optimizer, transfer):
    small = phases_lib.resolve_phases(_transfer_cfg(SMALL, optimizer, **transfer))
    large = phases_lib.resolve_phases(_transfer_cfg(LARGE, optimizer, **transfer))
    assert [p.learning_rate for p in large] == pytest.approx([0.1, 0.01])
    for s, big in zip(small, large, strict=True):
        assert big.learning_rate / s.learning_rate == pytest.approx(math.sqrt(LARGE / SMALL))


def test_a_phase_logs_its_effective_lr_and_where_it_comes_from():
    cfg = _transfer_cfg(32, phases=PHASES)
    probe, _ = phases_lib.resolve_phases(cfg)
    assert finetune._lr_text(probe, cfg) == "0.0125 (base 0.1 per 256 images, batch 32, sgd linear)"
    # schedule.json records both numbers.
    described = schedule.describe([probe])[0]
    assert described["learning_rate"] == pytest.approx(0.0125)
    assert described["base_learning_rate"] == 0.1


# -- the shipped configs and the demo keep what was measured -------------------------------------


def test_detection_config_at_batch_8_trains_at_model_gardens_lr_per_image():
    cfg = load_config(
        os.path.join(CONFIGS, "coco_retinanet_resnet50.yaml"),
        ["train.global_batch_size=8", "data.num_train_examples=80"],
    )
    heads, everything = phases_lib.resolve_phases(cfg)
    # 0.32 is Model Garden's at batch 256; at batch 8 it is 0.01, not 0.32 (which ended in NaN).
    assert heads.learning_rate == pytest.approx(0.32 * 8 / 256)
    assert everything.learning_rate == pytest.approx(0.32 * 8 / 256)


def test_restated_configs_train_at_the_measured_absolute_lrs():
    demo = load_config(os.path.join(CONFIGS, "demo.yaml"))
    assert demo.train.global_batch_size == 32
    paths = plan.DemoPaths.under("/tmp/unused_demo")
    fin = plan.finetune_config(demo, paths)
    assert fin.train.global_batch_size == 32
    fin.data.num_train_examples = 240
    # Head 0.05, not 0.2 since issue 34: the head phase's loss spiked at 0.2.
    assert [p.learning_rate for p in phases_lib.resolve_phases(fin)] == [0.05, 0.05]
    (scratch,) = phases_lib.resolve_phases(plan.scratch_config(fin))
    assert scratch.learning_rate == 0.05  # the phases' largest (a stronger scratch than at 0.2)
    for run in demo_detection.detection_configs(demo, paths).values():
        assert run.train.global_batch_size == 8
        assert {p.learning_rate for p in phases_lib.resolve_phases(run)} == {0.005}
    # The COCO multi-label recipe: the real-photo benchmark's probe 0.1 and fine-tune 0.03 at its
    # batch 32.
    coco = load_config(
        os.path.join(CONFIGS, "coco_multilabel_resnet50.yaml"), ["train.global_batch_size=32"]
    )
    assert [p.learning_rate for p in phases_lib.resolve_phases(coco)] == pytest.approx([0.1, 0.03])


def test_benchmarks_keep_their_absolute_lrs_at_their_batch():
    size = transfer_bench.BenchmarkSize()
    for run, want in (("pretrained_schedule", [0.5, 0.05]), ("scratch", [0.2])):
        cfg = transfer_bench.transfer_config(size, "/tmp/unused_coco", run)
        assert [p.learning_rate for p in phases_lib.resolve_phases(cfg)] == pytest.approx(want)
    dsize = detection_bench.DetectionBenchmarkSize()
    cfg = detection_bench.detection_config(dsize, "/tmp/unused_coco", "pretrained", 100)
    lrs = [p.learning_rate for p in phases_lib.resolve_phases(cfg)]
    assert lrs == pytest.approx([dsize.head_lr, dsize.head_lr * dsize.finetune_lr_factor])
    psize, dirs = (
        photos_bench.PhotoBenchmarkSize(batch_size=8),
        {"coco": "/tmp/x", "coco_classes": 3},
    )
    for arm in ("linear_probe", "full_finetune", "scratch"):
        (phase,) = phases_lib.resolve_phases(photos_bench.arm_config(psize, dirs, arm, 24))
        assert phase.learning_rate == pytest.approx(photos_bench.ARM_LEARNING_RATE)
    ssize = ssl_bench.SSLBenchmarkSize()
    (probe,) = phases_lib.resolve_phases(ssl_bench.probe_config(ssize, "/tmp/unused_inet"))
    assert probe.learning_rate == pytest.approx(ssize.probe_lr)  # Adam at batch 64


# -- the old absolute keys ------------------------------------------------------------------------

RENAMED = r"was renamed '{new}' \(per 256 images, .*x sqrt\(B/256\) for adam/adamw\).* v\*256/B"


@pytest.mark.parametrize(
    "yaml_text, old, new",
    [
        (
            "transfer:\n  phases:\n    - {trainable: head, steps: 1}\n"
            "    - {trainable: all, steps: 1, learning_rate: 0.1}\n",
            "transfer.phases[1].learning_rate",
            "base_learning_rate",
        ),
        ("transfer:\n  learning_rate: 0.1\n", "transfer.learning_rate", "base_learning_rate"),
        (
            "demo:\n  scratch_learning_rate: 0.1\n",
            "demo.scratch_learning_rate",
            "scratch_base_learning_rate",
        ),
    ],
)
def test_old_lr_keys_in_a_file_are_a_one_line_error_naming_both(tmp_path, yaml_text, old, new):
    path = tmp_path / "old.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config key '{old}' was renamed '{new}'")
    assert re.search(RENAMED.format(new=new), message)


@pytest.mark.parametrize(
    "override, old",
    [
        ("transfer.phases.0.learning_rate=0.1", "transfer.phases.0.learning_rate"),
        ("transfer.learning_rate=0.1", "transfer.learning_rate"),
        ("transfer.phases=[{trainable: all, steps: 1, learning_rate: 0.1}]", None),
    ],
)
def test_old_lr_keys_in_overrides_are_the_same_error(tmp_path, override, old):
    path = tmp_path / "new.yaml"
    path.write_text("transfer:\n  phases:\n    - {trainable: head, steps: 1}\n")
    with pytest.raises(ConfigError, match=RENAMED.format(new="base_learning_rate")) as info:
        load_config(str(path), [override])
    assert f"'{old or 'transfer.phases[0].learning_rate'}'" in str(info.value)


def test_a_saved_run_from_before_the_rename_says_how_to_convert(tmp_path):
    # A run dir whose config.yaml was written with the absolute key: resume and evaluate read it.
    cfg = _transfer_cfg(32, phases=PHASES)
    data = to_dict(cfg)
    for phase in data["transfer"]["phases"]:
        phase["learning_rate"] = phase.pop("base_learning_rate")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    ckpt = tf.train.Checkpoint(step=tf.Variable(4, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, str(run / "checkpoints"), 1).save(checkpoint_number=4)
    for call in (
        lambda: checkpoints.read_run_config(str(run)),
        lambda: check_resume_config(cfg, str(run)),
    ):
        with pytest.raises(UsageError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "config.yaml" in message
        assert "'transfer.phases[0].learning_rate' was renamed 'base_learning_rate'" in message
        assert re.search(RENAMED.format(new="base_learning_rate"), message)
