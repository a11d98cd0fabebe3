"""Backbone restore from each source kind; wrong or incompatible sources are clear errors."""

import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from transfer_tf.config import ModelConfig
from transfer_tf.errors import UsageError
from transfer_tf.export.saved_model import write_model_signature
from transfer_tf.models.resnet import backbone_layers, build_classifier
from transfer_tf.training.resume import check_warm_start
from transfer_tf.transfer.restore import detect_source_kind, restore_backbone


def _randomize(model, seed=0):
    """Non-default values everywhere (BN statistics included) so a restore is observable."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0.5, 0.1, v.shape).astype("float32"))


def _backbone_values(model):
    return {f"{la.name}/{w.name}": w.numpy() for la in backbone_layers(model) for w in la.weights}


def _pretraining_run(tmp_path, cfg, source, step: int) -> str:
    """A pretraining run dir as training.checkpoints lays it out: config.yaml + checkpoints/."""
    from transfer_tf.config import save_config

    run = tmp_path / "pretrain"
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, str(run / "config.yaml"))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=source), str(run / "checkpoints"), max_to_keep=1
    )
    manager.save(checkpoint_number=step)
    return str(run)


def _assert_backbone_equal(a, b):
    va, vb = _backbone_values(a), _backbone_values(b)
    assert va.keys() == vb.keys()
    for key in va:
        np.testing.assert_array_equal(va[key], vb[key], err_msg=key)


def test_standard_keras_resnet50_notop_file(tmp_path):
    # The layout of resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, saved offline.
    ref = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    _randomize(ref)
    path = str(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    model = build_classifier(ModelConfig(name="resnet50", input_preprocessing="caffe"), 80)
    head_before = model.get_layer("head_dense").kernel.numpy().copy()
    report = restore_backbone(model, path)
    assert report.kind == "keras_weights" and report.num_variables == len(ref.weights)
    np.testing.assert_array_equal(
        model.get_layer("conv5_block3_3_bn").moving_variance.numpy(),
        ref.get_layer("conv5_block3_3_bn").moving_variance.numpy(),
    )
    np.testing.assert_array_equal(model.get_layer("head_dense").kernel.numpy(), head_before)
    with pytest.raises(UsageError, match="does not fit"):
        restore_backbone(build_classifier(ModelConfig(name="resnet18"), 3), path)
    # Issue 13 item 8: the same variables, but trained on caffe inputs with the v1 stride.
    standardize = build_classifier(ModelConfig(name="resnet50"), 80)
    before = standardize.get_layer("conv1_conv").kernel.numpy().copy()
    with pytest.raises(
        UsageError, match=r"model.input_preprocessing is 'standardize', the source has 'caffe'"
    ):
        restore_backbone(standardize, path)
    np.testing.assert_array_equal(standardize.get_layer("conv1_conv").kernel.numpy(), before)
    v15 = ModelConfig(name="resnet50", input_preprocessing="caffe", resnet_variant="v1.5")
    with pytest.raises(UsageError, match=r"model.resnet_variant is 'v1.5', the source has 'v1'"):
        restore_backbone(build_classifier(v15, 80), path)


def test_keras3_weights_file(tmp_path):
    source = build_classifier(ModelConfig(name="resnet18"), 3)
    _randomize(source)
    path = str(tmp_path / "r18.weights.h5")
    source.save_weights(path)
    target = build_classifier(ModelConfig(name="resnet18", dropout=0.2), 10)
    restore_backbone(target, path)
    _assert_backbone_equal(source, target)


def _save_like_export(model, export_dir, version=1):
    """A SavedModel with the variable layout of export.saved_model.ServingModule (a
    `model_variables` list; TF names `layer/weight`), without tracing the serving signatures
    (the exporter's own tests cover those; tracing them here would triple this test's time)."""
    module = tf.Module()
    module.model_variables = list(model.variables)
    version_dir = os.path.join(export_dir, str(version))
    tf.saved_model.save(module, version_dir)
    write_model_signature(model, version_dir)


def test_saved_model_export(tmp_path):
    source = build_classifier(ModelConfig(name="resnet18"), 3)
    _randomize(source, seed=1)
    export_dir = str(tmp_path / "export")
    _save_like_export(source, export_dir, version=10)
    _randomize(source, seed=2)
    _save_like_export(source, export_dir, version=11)  # the latest version is restored
    # A different head (dropout, 7 classes) is fine: it is not restored.
    target = build_classifier(ModelConfig(name="resnet18", dropout=0.1), 7)
    assert detect_source_kind(export_dir) == "saved_model"
    report = restore_backbone(target, export_dir)
    assert report.kind == "saved_model"
    _assert_backbone_equal(source, target)
    with pytest.raises(UsageError, match="does not fit model 'resnet34'"):
        restore_backbone(build_classifier(ModelConfig(name="resnet34"), 3), export_dir)
    # The export records its input preprocessing; another one is an error naming the key.
    caffe = build_classifier(ModelConfig(name="resnet18", input_preprocessing="caffe"), 7)
    with pytest.raises(UsageError, match=r"model.input_preprocessing is 'caffe'"):
        restore_backbone(caffe, export_dir)
    other_mean = build_classifier(ModelConfig(name="resnet18", mean_rgb=(127.0, 127.0, 127.0)), 7)
    with pytest.raises(UsageError, match=r"model.mean_rgb is \[127.0, 127.0, 127.0\]"):
        restore_backbone(other_mean, export_dir)


def test_bad_sources_are_one_line_errors(tmp_path):
    model = build_classifier(ModelConfig(name="resnet18"), 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "bad.h5").write_text("not hdf5")
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "empty"): "none of the known sources",
        str(tmp_path / "notes.txt"): "not .h5",
        str(tmp_path / "bad.h5"): "not an HDF5",
    }
    for path, needle in cases.items():
        with pytest.raises(UsageError, match=needle) as info:
            restore_backbone(model, path)
        assert "\n" not in str(info.value)


def test_pretraining_model_dir(tmp_path):
    from transfer_tf.config import config_from_dict

    cfg = config_from_dict({"data": {"num_classes": 6}, "model": {"name": "resnet18"}})
    source = build_classifier(cfg.model, 6)
    _randomize(source, seed=3)
    run = _pretraining_run(tmp_path, cfg, source, 5)
    target = build_classifier(ModelConfig(name="resnet18"), 80)
    assert restore_backbone(target, str(run)).kind == "model_dir"
    _assert_backbone_equal(source, target)
    with pytest.raises(UsageError, match="is a resnet18, the model is a resnet34"):
        restore_backbone(build_classifier(ModelConfig(name="resnet34"), 80), str(run))
    caffe = build_classifier(ModelConfig(name="resnet18", input_preprocessing="caffe"), 80)
    with pytest.raises(UsageError, match=r"model.input_preprocessing is 'caffe'.*'standardize'"):
        restore_backbone(caffe, str(run))


def test_model_dir_resnet_variant_must_match(tmp_path):
    from transfer_tf.config import config_from_dict, save_config

    # v1 and v1.5 have identical variables: only the run's config can tell them apart. The check
    # comes from config.yaml, before the checkpoint would be read.
    run = tmp_path / "pretrain_v1"
    (run / "checkpoints").mkdir(parents=True)
    save_config(config_from_dict({"model": {"name": "resnet50"}}), str(run / "config.yaml"))
    v15 = build_classifier(ModelConfig(name="resnet50", resnet_variant="v1.5"), 80)
    with pytest.raises(UsageError, match=r"model.resnet_variant is 'v1.5', the source has 'v1'"):
        restore_backbone(v15, str(run))
    # A pretraining warm start (train.init_checkpoint) from that run, or one checkpoint of it.
    for source in (run, run / "checkpoints" / "ckpt-5"):
        with pytest.raises(UsageError, match=r"model.resnet_variant is 'v1.5'"):
            check_warm_start(v15, str(source))


def test_resnet50_v15_run_restores_bit_for_bit(tmp_path):
    """Issue 29: the product's own backbone (ResNet-50 v1.5, zero-initialised last BN gammas, as
    configs/imagenet_resnet50.yaml) comes back from a pretraining run exactly: every kernel,
    every BN gamma/beta and moving statistic."""
    from transfer_tf.config import config_from_dict

    model = {"name": "resnet50", "resnet_variant": "v1.5", "zero_init_residual_gamma": True}
    cfg = config_from_dict({"data": {"num_classes": 11}, "model": model})
    source = build_classifier(cfg.model, 11)
    _randomize(source, seed=5)
    run = _pretraining_run(tmp_path, cfg, source, 120)
    target = build_classifier(ModelConfig(name="resnet50", resnet_variant="v1.5"), 8)
    restore_backbone(target, str(run))
    _assert_backbone_equal(source, target)
    bn = target.get_layer("conv5_block3_3_bn")
    assert bn.moving_variance.numpy().std() > 0  # the randomised statistics, not the defaults
