"""The phase model: trainable specs, presets, global-step layout, freezing and LR multipliers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import ConfigError, ModelConfig, config_from_dict
from transfer_tf.models.resnet import build_classifier, layers_by_stage
from transfer_tf.transfer import phases as phases_lib
from transfer_tf.transfer import schedule


def test_parse_trainable():
    assert schedule.parse_trainable("head") == ("head",)
    assert schedule.parse_trainable("stage3+") == ("stage3", "stage4", "fpn", "head")
    assert schedule.parse_trainable("fpn,head") == ("fpn", "head")
    assert "fpn" not in schedule.parse_trainable("backbone")
    assert schedule.parse_trainable("head, stage4") == ("stage4", "head")
    assert schedule.parse_trainable("all") == schedule.STAGES
    assert "head" not in schedule.parse_trainable("backbone")
    with pytest.raises(ConfigError, match=r"phases\[1\].trainable.*'stage9'"):
        schedule.parse_trainable("head,stage9", "transfer.phases[1].trainable")


def _cfg(**transfer):
    return config_from_dict(
        {
            "data": {"num_train_examples": 1000, "num_classes": 5},
            "train": {"global_batch_size": 100, "train_steps": 40},
            "transfer": transfer,
        }
    )


def test_phases_are_contiguous_on_the_global_step_axis():
    cfg = _cfg(
        phases=[
            {"name": "probe", "trainable": "head", "epochs": 1.5, "base_learning_rate": 0.1},
            {
                "trainable": "stage4+",
                "steps": 7,
                "base_learning_rate": 0.01,
                "lr_schedule": "constant",
            },
        ]
    )
    scale = 100 / 256  # per 256 images -> batch 100 (sgd: linear)
    p0, p1 = phases_lib.resolve_phases(cfg)
    assert (p0.start_step, p0.end_step) == (0, 15)  # 1.5 epochs * 1000 / 100
    assert (p1.start_step, p1.end_step, p1.name) == (15, 22, "phase1")
    assert schedule.phase_at_step([p0, p1], 14) is p0
    assert schedule.phase_at_step([p0, p1], 15) is p1
    assert schedule.phase_at_step([p0, p1], 22) is None
    assert (p0.base_learning_rate, p0.learning_rate) == (0.1, pytest.approx(0.1 * scale))
    lr0 = schedule.phase_schedule(p0)
    assert float(lr0(tf.constant(0))) == pytest.approx(0.1 * scale)
    assert float(lr0(tf.constant(14))) < 0.01 * scale  # cosine to ~0 by the phase end
    assert float(schedule.phase_schedule(p1)(tf.constant(20))) == pytest.approx(0.01 * scale)


@pytest.mark.parametrize(
    "preset,stages",
    [
        ("linear_probe", [("head",)]),
        ("lp_ft", [("head",), schedule.STAGES]),
        (
            "gradual_unfreeze",
            [
                ("head",),
                # stageN+ is every stage above N: a detector's fpn too (a classifier has none).
                ("stage4", "fpn", "head"),
                ("stage3", "stage4", "fpn", "head"),
                ("stage2", "stage3", "stage4", "fpn", "head"),
                schedule.STAGES,
            ],
        ),
    ],
)
def test_presets_spend_the_budget(preset, stages):
    phases = phases_lib.resolve_phases(_cfg(preset=preset, base_learning_rate=0.2))
    assert [p.trainable_stages for p in phases] == stages
    assert phases[0].start_step == 0 and phases[-1].end_step == 40
    # transfer.base_learning_rate is per 256 images: at batch 100 the head trains at 0.2 x 100/256.
    assert phases[0].base_learning_rate == pytest.approx(0.2)
    assert phases[0].learning_rate == pytest.approx(0.2 * 100 / 256)
    assert all(p.learning_rate == pytest.approx(0.02 * 100 / 256) for p in phases[1:])


def test_schedule_errors_name_the_key():
    with pytest.raises(ConfigError, match="transfer.phases"):
        phases_lib.resolve_phases(_cfg())
    with pytest.raises(ConfigError, match=r"lr_multipliers.stage7"):
        phases_lib.resolve_phases(
            _cfg(phases=[{"trainable": "all", "steps": 2, "lr_multipliers": {"stage7": 0.1}}])
        )
    cfg = _cfg(phases=[{"trainable": "all", "epochs": 1}])
    cfg.data.num_train_examples = 0
    with pytest.raises(ConfigError, match="num_train_examples"):
        phases_lib.resolve_phases(cfg)


def _phase(trainable, frozen_batchnorm="inference", mult=None):
    return schedule.Phase(
        index=0,
        name="p",
        trainable_stages=schedule.parse_trainable(trainable),
        start_step=0,
        end_step=1,
        learning_rate=0.1,
        lr_multipliers=mult or {},
        frozen_batchnorm=frozen_batchnorm,
    )


def test_apply_phase_freezes_and_returns_trained_variables():
    model = build_classifier(ModelConfig(name="resnet18"), 4)
    groups = layers_by_stage(model)
    variables = schedule.apply_phase(model, _phase("stage4+"))
    paths = {v.path for v in variables}
    assert paths == {
        v.path for la in groups["stage4"] + groups["head"] for v in la.weights if v.trainable
    }
    assert all(not la.trainable for la in groups["stage1"])
    # frozen_batchnorm=train keeps frozen BN layers in training mode, but their gamma/beta
    # are not handed to the optimizer.
    variables = schedule.apply_phase(model, _phase("head", "train"))
    bn = model.get_layer("conv2_block1_1_bn")
    assert bn.trainable and bn.gamma.path not in {v.path for v in variables}
    assert not model.get_layer("conv2_block1_1_conv").trainable
    x = tf.random.uniform([2, 32, 32, 3], 0, 255)
    before = bn.moving_mean.numpy().copy()
    model(x, training=True)
    assert not np.array_equal(before, bn.moving_mean.numpy())
    # All trainable again for the `all` phase.
    variables = schedule.apply_phase(model, _phase("all"))
    assert len(variables) == len(model.trainable_variables)
    mults = schedule.lr_multipliers(model, _phase("all", mult={"stage3": 0.1}))
    assert set(mults.values()) == {0.1}
    assert {p.split("/")[0][:5] for p in mults} == {"conv4"}
    assert isinstance(bn, keras.layers.BatchNormalization)
