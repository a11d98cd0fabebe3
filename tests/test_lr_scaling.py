"""Every learning rate in a config is per 256 images and follows the global batch by one rule
(issue 29 item 4): x B/256 for sgd/lars, x sqrt(B/256) for adam/adamw."""

import math

import pytest
import tensorflow as tf

from transfer_tf.config import TrainConfig
from transfer_tf.training import schedules

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
