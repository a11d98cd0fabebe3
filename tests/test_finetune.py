"""Fine-tuning job in process: frozen stages (weights and BN statistics) stay put, trained ones move."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import config_from_dict
from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import build_classifier, layers_by_stage
from transfer_tf.transfer.finetune import run_finetuning

NUM_CLASSES = 4


def _dataset_fn(ctx):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    labels = (rng.random((32, NUM_CLASSES)) < 0.4).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
    return ds.batch(ctx.get_per_replica_batch_size(8), drop_remainder=True)


def _eval_fn(ctx):
    return _dataset_fn(ctx).take(2)


def _snapshot(model):
    return {
        stage: {f"{la.name}/{w.name}": w.numpy().copy() for la in layers for w in la.weights}
        for stage, layers in layers_by_stage(model).items()
    }


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_phases_freeze_and_unfreeze(tmp_path):
    source = build_classifier(config_from_dict({"model": {"name": "resnet18"}}).model, 3)
    rng = np.random.default_rng(1)
    for layer in source.layers:  # non-default BN statistics, so "unchanged" is meaningful
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
    weights = str(tmp_path / "pretrained.weights.h5")
    source.save_weights(weights)
    pretrained = _snapshot(source)

    cfg = config_from_dict(
        {
            "data": {"schema": "coco", "num_classes": NUM_CLASSES, "image_size": 32},
            "model": {"name": "resnet18"},
            "train": {"global_batch_size": 8, "strategy": "one_device", "log_every_steps": 100},
            "transfer": {
                "phases": [
                    # 0.1 and 0.05 at batch 8 (per 256 images: x 256/8).
                    {"name": "probe", "trainable": "head", "steps": 3, "base_learning_rate": 3.2},
                    {
                        "name": "top",
                        "trainable": "stage4+",
                        "steps": 3,
                        "base_learning_rate": 1.6,
                        "lr_multipliers": {"stage4": 0.5},
                    },
                ]
            },
        }
    )
    snaps = {}
    result = run_finetuning(
        cfg,
        str(tmp_path / "run"),
        init_checkpoint=weights,
        train_dataset_fn=_dataset_fn,
        eval_input_fn=_eval_fn,
        on_phase_end=lambda phase, model: snaps.setdefault(phase.name, _snapshot(model)),
    )
    assert result["global_step"] == 6 and result["phases"] == ["probe", "top"]
    assert 0.0 <= result["eval"]["mAP"] <= 1.0 and len(result["eval"]["per_class_AP"]) == 4
    probe, top = snaps["probe"], snaps["top"]
    # Phase 1: the whole backbone (kernels, gamma/beta AND BN moving statistics) is untouched.
    for stage in ("stem", "stage1", "stage2", "stage3", "stage4"):
        assert _same(probe[stage], pretrained[stage]), stage
    # Phase 2: stage4 (weights and its BN statistics) and the head move, the rest does not.
    for stage in ("stem", "stage1", "stage2", "stage3"):
        assert _same(top[stage], pretrained[stage]), stage
    assert not np.array_equal(
        top["stage4"]["conv5_block1_1_conv/kernel"],
        pretrained["stage4"]["conv5_block1_1_conv/kernel"],
    )
    assert not np.array_equal(
        top["stage4"]["conv5_block1_1_bn/moving_mean"],
        pretrained["stage4"]["conv5_block1_1_bn/moving_mean"],
    )
    assert not np.array_equal(top["head"]["head_dense/kernel"], probe["head"]["head_dense/kernel"])
    # One checkpoint directory and step count across phases; the schedule is recorded.
    ckpts = tf.train.get_checkpoint_state(str(tmp_path / "run" / "checkpoints"))
    assert ckpts.model_checkpoint_path.endswith("ckpt-6")
    assert any(p.endswith("ckpt-3") for p in ckpts.all_model_checkpoint_paths)
    assert (tmp_path / "run" / "schedule.json").exists()
    # Rerunning a finished run trains nothing and does not re-read the source.
    again = run_finetuning(
        cfg,
        str(tmp_path / "run"),
        init_checkpoint=str(tmp_path / "gone.h5"),
        train_dataset_fn=_dataset_fn,
    )
    assert again["phases"] == [] and again["global_step"] == 6


def test_bad_source_fails_before_writing_anything(tmp_path):
    cfg = config_from_dict(
        {
            "data": {"num_train_examples": 10},
            "transfer": {"preset": "linear_probe"},
            "train": {"train_steps": 2},
        }
    )
    with pytest.raises(UsageError, match=r"^--init_checkpoint: '.*nope.h5' does not exist$"):
        run_finetuning(cfg, str(tmp_path / "run"), init_checkpoint=str(tmp_path / "nope.h5"))
    assert not (tmp_path / "run").exists()
