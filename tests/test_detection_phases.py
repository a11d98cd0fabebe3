"""A detector takes its backbone, phases and frozen BN exactly as a classifier does: strict restore
of a classifier's weights (FPN and heads stay new), `fpn,head` freezes the backbone, presets train
`fpn,head` where a classifier trains `head`."""

import numpy as np
import pytest

from transfer_tf.config import DetectionConfig, ModelConfig, load_config
from transfer_tf.detection.retinanet import build_retinanet
from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import build_classifier, layers_by_stage
from transfer_tf.transfer import phases as phases_lib
from transfer_tf.transfer import restore, schedule

DET = DetectionConfig(image_size=128, head_convs=1)


def test_backbone_restores_strictly_from_a_classifier_weights_file(tmp_path):
    source = build_classifier(ModelConfig(name="resnet18"), 10)
    path = str(tmp_path / "r18.weights.h5")
    source.save_weights(path)
    detector = build_retinanet(ModelConfig(name="resnet18"), DET, num_classes=3)
    fpn_before = [w.numpy() for w in detector.get_layer("fpn").weights]
    report = restore.restore_backbone(detector, path)
    assert report.kind == "keras_weights" and report.num_variables > 0
    for name in ("conv1_conv", "conv3_block2_2_conv", "conv5_block2_2_bn"):
        for got, want in zip(
            detector.get_layer(name).weights, source.get_layer(name).weights, strict=True
        ):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    for got, want in zip(detector.get_layer("fpn").weights, fpn_before, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)  # new layers are not restored

    other = build_classifier(ModelConfig(name="resnet34"), 10)
    other_path = str(tmp_path / "r34.weights.h5")
    other.save_weights(other_path)
    with pytest.raises(UsageError, match="missing|unexpected|mismatched"):
        restore.restore_backbone(
            build_retinanet(ModelConfig(name="resnet18"), DET, num_classes=3), other_path
        )


def test_fpn_head_phase_freezes_the_backbone_and_its_batchnorm():
    import keras

    detector = build_retinanet(ModelConfig(name="resnet18"), DET, num_classes=3)
    groups = layers_by_stage(detector)
    assert groups["fpn"] and groups["head"] and groups["stage4"]
    phase = schedule.Phase(
        index=0,
        name="heads",
        trainable_stages=schedule.parse_trainable("fpn,head"),
        start_step=0,
        end_step=10,
        learning_rate=0.01,
    )
    variables = schedule.apply_phase(detector, phase)
    new = {id(v) for stage in ("fpn", "head") for la in groups[stage] for v in la.trainable_weights}
    assert variables and {id(v) for v in variables} == new
    bn = detector.get_layer("conv2_block1_1_bn")
    assert isinstance(bn, keras.layers.BatchNormalization) and not bn.trainable  # inference mode
    everything = schedule.apply_phase(
        detector, schedule.Phase(1, "all", schedule.parse_trainable("all"), 10, 20, 0.001)
    )
    assert len(everything) == len(detector.trainable_variables) > len(variables)


def test_presets_train_fpn_and_head_first():
    cfg = load_config(
        None,
        [
            "transfer.task=detection",
            "data.schema=coco",
            "transfer.preset=lp_ft",
            "train.train_steps=40",
        ],
    )
    phases = phases_lib.resolve_phases(cfg)
    assert phases[0].trainable_stages == ("fpn", "head")
    assert phases[1].trainable_stages == schedule.STAGES
    decay = phases_lib.layer_decay_multipliers(0.5)
    assert decay["fpn"] == decay["head"] == 1.0 and decay["stage4"] == 0.5
