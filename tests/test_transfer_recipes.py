"""Transfer recipe knobs: the bit_hyperrule preset, layer-wise LR decay, head init and prior."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import ConfigError, ModelConfig, TrainConfig, config_from_dict
from transfer_tf.models.resnet import build_classifier
from transfer_tf.training.optimizers import make_optimizer
from transfer_tf.transfer import phases as phases_lib
from transfer_tf.transfer import schedule
from transfer_tf.transfer.finetune import initialize_head, run_finetuning


def _cfg(data=None, train=None, **transfer):
    return config_from_dict(
        {
            "data": {
                "num_train_examples": 1000,
                "num_classes": 5,
                "schema": "coco",
                **(data or {}),
            },
            "train": {"global_batch_size": 64, **(train or {})},
            "transfer": transfer,
        }
    )


# -- bit_hyperrule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,steps,warmup,decays,mixup",
    [
        (5_000, 500, 100, (0.4, 0.6, 0.8), 0.0),
        (19_999, 500, 100, (0.4, 0.6, 0.8), 0.0),
        (20_000, 10_000, 500, (0.3, 0.6, 0.9), 0.1),
        (499_999, 10_000, 500, (0.3, 0.6, 0.9), 0.1),
        (1_281_167, 20_000, 500, (0.3, 0.6, 0.9), 0.1),
    ],
)
def test_bit_hyperrule_values_from_the_dataset_size(size, steps, warmup, decays, mixup):
    rule = phases_lib.bit_hyperrule(size, 512)
    assert (rule.total_steps, rule.warmup_steps, rule.mixup_alpha) == (steps, warmup, mixup)
    assert rule.decay_fractions == pytest.approx(decays)
    assert rule.learning_rate == pytest.approx(0.003)
    assert phases_lib.bit_hyperrule(size, 64).learning_rate == pytest.approx(0.003 * 64 / 512)
    assert rule.base_learning_rate == 0.0015  # BiT's LR per 256 images (SGD)
    assert rule.resolution is None
    assert phases_lib.bit_hyperrule(size, 512, image_side=32).resolution == (160, 128)
    assert phases_lib.bit_hyperrule(size, 512, image_side=224).resolution == (512, 480)


def test_bit_hyperrule_preset_resolves_one_sgd_phase_with_step_decays():
    cfg = _cfg(preset="bit_hyperrule")
    (phase,) = phases_lib.resolve_phases(cfg)
    assert phase.trainable_stages == schedule.STAGES
    assert (phase.num_steps, phase.warmup_steps, phase.decay_steps) == (500, 100, (200, 300, 400))
    # Written per 256 images (0.0015), resolved to exactly BiT's 0.003 * B / 512 at any batch.
    assert phase.base_learning_rate == 0.0015
    for batch in (8, 64, 96, 256, 4096):
        (at_batch,) = phases_lib.resolve_phases(
            _cfg(train={"global_batch_size": batch}, preset="bit_hyperrule")
        )
        assert at_batch.learning_rate == 0.003 * batch / 512
    lr = schedule.phase_schedule(phase)
    peak = phase.learning_rate
    for step, want in [(50, peak / 2), (150, peak), (250, peak / 10), (350, peak / 100)]:
        assert float(lr(tf.constant(step))) == pytest.approx(want, rel=1e-5)
    assert float(lr(tf.constant(450))) == pytest.approx(peak / 1000, rel=1e-4)
    # Zero head, no MixUp below 20k examples, SGD.
    resolved = phases_lib.preset_config(cfg)
    assert resolved.transfer.head_init == "zero"
    assert resolved.data.mixup_alpha == 0.0
    big = phases_lib.preset_config(_cfg({"num_train_examples": 50_000}, preset="bit_hyperrule"))
    assert big.data.mixup_alpha == pytest.approx(0.1)
    assert phases_lib.resolve_phases(big)[0].num_steps == 10_000


def test_bit_hyperrule_budget_override_keeps_its_fractions():
    (phase,) = phases_lib.resolve_phases(_cfg(train={"train_steps": 90}, preset="bit_hyperrule"))
    assert (phase.num_steps, phase.warmup_steps, phase.decay_steps) == (90, 18, (36, 54, 72))


def test_bit_hyperrule_conflicts_name_the_keys():
    with pytest.raises(ConfigError, match=r"transfer.preset.*transfer.phases"):
        _cfg(preset="bit_hyperrule", phases=[{"trainable": "all", "steps": 3}])
    with pytest.raises(ConfigError, match=r"transfer.preset.*transfer.optimizer.*adam"):
        phases_lib.preset_config(_cfg(preset="bit_hyperrule", optimizer="adam"))
    with pytest.raises(ConfigError, match=r"data.num_train_examples"):
        phases_lib.resolve_phases(_cfg({"num_train_examples": 0}, preset="bit_hyperrule"))


# -- layer_decay --------------------------------------------------------------------------------


def test_layer_decay_gives_per_stage_multipliers_times_the_phase_ones():
    cfg = _cfg(
        layer_decay=0.7,
        phases=[{"trainable": "all", "steps": 3, "lr_multipliers": {"stage4": 0.5}}],
    )
    (phase,) = phases_lib.resolve_phases(cfg)
    want = {
        "stage4": 0.7 * 0.5,
        "stage3": 0.7**2,
        "stage2": 0.7**3,
        "stage1": 0.7**4,
        "stem": 0.7**5,
    }
    assert phase.lr_multipliers == pytest.approx(want)
    assert "head" not in phase.lr_multipliers
    (plain,) = phases_lib.resolve_phases(_cfg(phases=[{"trainable": "all", "steps": 3}]))
    assert plain.lr_multipliers == {}
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="transfer.layer_decay"):
            _cfg(layer_decay=bad, phases=[{"trainable": "all", "steps": 3}])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_layer_decay_scales_the_learning_rate_under_sgd_and_adam(optimizer):
    # One update with gradient 1 everywhere: SGD moves by lr, a fresh Adam by ~lr (its first step
    # is lr * g / (|g| + eps)); with layer decay each variable moves by lr x its stage's factor.
    # (Scaling the gradient instead would leave Adam's step unchanged.)
    keras.utils.set_random_seed(0)
    model = build_classifier(ModelConfig(name="resnet18"), 3)
    cfg = _cfg(layer_decay=0.5, phases=[{"trainable": "all", "steps": 1}])
    (phase,) = phases_lib.resolve_phases(cfg)
    variables = schedule.apply_phase(model, phase)
    by_path = schedule.lr_multipliers(model, phase)
    opt = make_optimizer(TrainConfig(momentum=0.0), optimizer=optimizer)
    opt.build(variables)
    opt.set_lr_multipliers([(v, by_path[v.path]) for v in variables if v.path in by_path])
    opt.learning_rate.assign(0.01)
    before = {v.path: v.numpy().copy() for v in variables}
    opt.apply_gradients([(tf.ones_like(v), v) for v in variables])
    picks = {
        "stem": "conv1_conv/kernel",
        "stage1": "conv2_block1_1_conv/kernel",
        "stage4": "conv5_block1_1_conv/kernel",
        "head": "head_dense/kernel",
    }
    depth = {"stem": 5, "stage1": 4, "stage4": 1, "head": 0}
    by_name = {v.path: v for v in variables}
    for stage, path in picks.items():
        moved = before[path] - by_name[path].numpy()
        np.testing.assert_allclose(moved, 0.01 * 0.5 ** depth[stage], rtol=1e-3)


# -- head init ----------------------------------------------------------------------------------


def test_zero_head_and_prior_bias_give_the_expected_initial_outputs():
    keras.utils.set_random_seed(0)
    model = build_classifier(ModelConfig(name="resnet18"), 4)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert np.abs(model(images).numpy()).max() > 1e-3  # the default head is not neutral
    initialize_head(model, "zero")
    np.testing.assert_array_equal(model(images).numpy(), np.zeros((2, 4), np.float32))
    initialize_head(model, "zero", head_prior=0.01)
    probs = tf.sigmoid(model(images)).numpy()
    np.testing.assert_allclose(probs, np.full((2, 4), 0.01), rtol=1e-5)
    model2 = build_classifier(ModelConfig(name="resnet18"), 4)
    kernel = model2.get_layer("head_dense").kernel.numpy().copy()
    initialize_head(model2, "default", head_prior=0.2)
    np.testing.assert_allclose(
        model2.get_layer("head_dense").bias.numpy(), np.full(4, -math.log(0.8 / 0.2)), rtol=1e-6
    )
    np.testing.assert_array_equal(model2.get_layer("head_dense").kernel.numpy(), kernel)


def test_head_prior_is_for_sigmoid_heads():
    with pytest.raises(ConfigError, match=r"transfer.head_prior.*data.schema"):
        _cfg({"schema": "classification"}, head_prior=0.01, phases=[])
    with pytest.raises(ConfigError, match="transfer.head_prior"):
        _cfg(head_prior=1.0)
    with pytest.raises(ConfigError, match="transfer.head_init"):
        _cfg(head_init="ones")


@pytest.mark.slow
def test_finetuning_starts_from_the_configured_head(tmp_path):
    # A one-step run at LR 0 leaves the head exactly as run_finetuning initialised it.
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    cfg = config_from_dict(
        {
            "data": {"schema": "coco", "num_classes": 3, "image_size": 32},
            "model": {"name": "resnet18"},
            "train": {"global_batch_size": 4, "strategy": "one_device", "log_every_steps": 10},
            "transfer": {
                "head_init": "zero",
                "head_prior": 0.05,
                "phases": [{"trainable": "head", "steps": 1, "base_learning_rate": 0.0}],
            },
        }
    )
    heads = []

    def on_phase_end(phase, model):
        heads.append([w.numpy().copy() for w in model.get_layer("head_dense").weights])

    run_finetuning(
        cfg,
        str(tmp_path / "ft"),
        train_dataset_fn=lambda ctx: tf.data.Dataset.from_tensors((images, labels)).repeat(),
        on_phase_end=on_phase_end,
    )
    kernel, bias = heads[0]
    np.testing.assert_array_equal(kernel, np.zeros_like(kernel))
    np.testing.assert_allclose(bias, np.full(3, -math.log(0.95 / 0.05)), rtol=1e-6)


def test_phase_warmup_in_epochs_scales_with_the_dataset():
    def warmup(examples, **phase):
        cfg = _cfg(
            {"num_train_examples": examples},
            phases=[{"trainable": "all", "epochs": 10, **phase}],
        )
        return phases_lib.resolve_phases(cfg)[0].warmup_steps

    assert warmup(640, warmup_epochs=1) == 10  # 640 / 64
    assert warmup(64_000, warmup_epochs=0.5) == 500
    assert warmup(640, warmup_steps=500) == 100  # capped at the phase (10 epochs = 100 steps)
    with pytest.raises(ConfigError, match=r"warmup_steps.*warmup_epochs.*conflict"):
        warmup(640, warmup_steps=5, warmup_epochs=1)
