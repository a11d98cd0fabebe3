"""Models: stages, dtypes, BN options, and loading the standard Keras ResNet-50 weights file layout."""

import dataclasses
import re

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from transfer_tf.config import DataConfig, ExperimentConfig, ModelConfig
from transfer_tf.errors import UsageError
from transfer_tf.models import resnet
from transfer_tf.models.weights import load_backbone_weights
from transfer_tf.training.run_setup import build_model


def _cfg(**kw) -> ModelConfig:
    return dataclasses.replace(ModelConfig(name="resnet18"), **kw)


def test_resnet18_stages_and_logits():
    model = resnet.build_classifier(_cfg(dropout=0.1), num_classes=7)
    logits = model(tf.zeros([2, 32, 32, 3], tf.uint8))
    assert logits.shape == (2, 7) and logits.dtype == tf.float32
    groups = resnet.layers_by_stage(model)
    assert set(groups) == set(resnet.STAGES)
    assert sum(len(v) for v in groups.values()) == len(model.layers)
    assert [layer.name for layer in groups["head"]] == ["head_pool", "head_dropout", "head_dense"]
    assert all(layer.name.startswith("conv5_") for layer in groups["stage4"])
    assert "conv1_conv" in [layer.name for layer in groups["stem"]]
    # 11.2M backbone params (torchvision resnet18 has 11.18M incl. its 1000-way fc of 0.51M).
    params = sum(int(np.prod(v.shape)) for v in model.weights if v.trainable)
    assert 11.1e6 < params - (512 * 7 + 7) < 11.2e6


def test_resnet10_is_resnet18_with_one_block_per_stage():
    model = resnet.build_classifier(_cfg(name="resnet10"), num_classes=7)
    names = [layer.name for layer in model.layers]
    # Stages, strides and widths of ResNet-18 (so the detector's FPN finds C3-C5), one block each.
    assert {n[:12] for n in names if re.match(r"conv[2-5]_block", n)} == {
        f"conv{s}_block1" for s in range(2, 6)
    }
    assert "conv3_block1_0_conv" in names and "conv2_block1_0_conv" not in names  # projections
    assert model(tf.zeros([2, 32, 32, 3], tf.uint8)).shape == (2, 7)
    features = keras.Model(model.input, model.get_layer("conv5_block1_out").output)
    assert features(tf.zeros([1, 64, 64, 3], tf.uint8)).shape == (1, 2, 2, 512)
    params = sum(int(np.prod(v.shape)) for v in model.weights if v.trainable)
    assert 4.90e6 < params - (512 * 7 + 7) < 4.91e6


def test_batchnorm_options_and_zero_gamma():
    model = resnet.build_classifier(
        _cfg(sync_batchnorm=True, batchnorm_momentum=0.8, zero_init_residual_gamma=True), 3
    )
    bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert all(b.synchronized and b.momentum == 0.8 for b in bns)
    last = [b for b in bns if b.name.endswith("_2_bn")]
    assert len(last) == 8 and all(np.all(b.gamma.numpy() == 0) for b in last)
    assert np.all(model.get_layer("conv2_block1_1_bn").gamma.numpy() == 1)


def test_mixed_precision_logits_are_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = resnet.build_classifier(_cfg(), 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert model(tf.zeros([1, 32, 32, 3], tf.uint8)).dtype == tf.float32


def test_frozen_batchnorm_runs_in_inference_mode():
    """Keras 3: a BN layer with trainable=False uses its moving statistics even with training=True."""
    model = resnet.build_classifier(_cfg(), 3)
    bn = model.get_layer("conv1_bn")
    bn.trainable = False
    before = [w.numpy().copy() for w in bn.weights]
    x = tf.random.uniform([2, 32, 32, 3], 0, 255)
    model(x, training=True)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, bn.weights, strict=True))
    bn.trainable = True
    model(x, training=True)
    assert not np.array_equal(before[2], bn.moving_mean.numpy())


def test_standard_keras_resnet50_weights_file_loads(tmp_path):
    """A legacy .h5 saved from keras.applications.ResNet50(include_top=False) -- the layout of
    resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 -- loads and gives identical features."""
    ref = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for layer in ref.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
    path = str(tmp_path / "resnet50_notop.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)

    cfg = dataclasses.replace(
        ModelConfig(name="resnet50"),
        input_preprocessing="caffe",
        batchnorm_epsilon=1.001e-5,
        init_weights=path,
    )
    experiment = ExperimentConfig(model=cfg, data=DataConfig(num_classes=5))
    model = build_model(experiment)
    images = rng.uniform(0, 255, [2, 32, 32, 3]).astype("float32")
    want = ref(keras.applications.resnet.preprocess_input(images.copy()), training=False)
    got = resnet.features_model(model)(images, training=False)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)

    assert resnet.build_classifier(cfg, 5).get_layer("conv1_conv").kernel.numpy().std() != (
        model.get_layer("conv1_conv").kernel.numpy().std()
    ), "build_classifier itself leaves the weights random"
    with pytest.raises(UsageError, match="unexpected layers: conv2_block1_0_bn"):
        load_backbone_weights(resnet.build_classifier(_cfg(), 5), path)
    # Issue 13 item 8: model.init_weights with the Keras ImageNet file needs caffe inputs.
    with pytest.raises(UsageError, match=r"model.input_preprocessing is 'standardize'"):
        build_model(
            dataclasses.replace(
                experiment, model=dataclasses.replace(cfg, input_preprocessing="standardize")
            )
        )


def test_resnet50_v15_strides_on_the_3x3_conv():
    """Issue 13 item 9: v1.5 (Model Garden, NVIDIA, torchvision) downsamples in each stage's first
    3x3 conv; v1 (keras.applications, its ImageNet weights) in the first 1x1 conv. Same variables."""
    v1 = resnet.build_classifier(ModelConfig(name="resnet50", resnet_variant="v1"), 5)
    v15 = resnet.build_classifier(ModelConfig(name="resnet50", resnet_variant="v1.5"), 5)
    for stage in ("conv3", "conv4", "conv5"):
        assert v1.get_layer(f"{stage}_block1_1_conv").strides == (2, 2)
        assert v1.get_layer(f"{stage}_block1_2_conv").strides == (1, 1)
        assert v15.get_layer(f"{stage}_block1_1_conv").strides == (1, 1)
        assert v15.get_layer(f"{stage}_block1_2_conv").strides == (2, 2)
        # The shortcut projection downsamples in both.
        assert v15.get_layer(f"{stage}_block1_0_conv").strides == (2, 2)
    assert v15.get_layer("conv2_block1_1_conv").strides == (1, 1)
    assert [(w.path, w.shape) for w in v1.weights] == [(w.path, w.shape) for w in v15.weights]
    # The 1x1 conv now sees the full-resolution map: 8x8 at 32 px instead of 4x4.
    probe = keras.Model(v15.input, v15.get_layer("conv3_block1_1_conv").output)
    assert probe(tf.zeros([1, 32, 32, 3])).shape == (1, 8, 8, 128)
    assert v15(tf.zeros([2, 64, 64, 3])).shape == (2, 5)
    assert resnet.model_signature(v15)["resnet_variant"] == "v1.5"
    assert resnet.model_signature(v1)["resnet_variant"] == "v1"


def test_imagenet_recipe_is_v15_and_old_configs_stay_v1():
    from transfer_tf.config import load_config

    assert load_config("configs/imagenet_resnet50.yaml").model.resnet_variant == "v1.5"
    # Run dirs written before the key existed were all v1 (keras.applications).
    assert ModelConfig().resnet_variant == "v1"


@pytest.mark.parametrize(
    "path,live",
    [
        ("configs/imagenet_resnet50.yaml", True),
        ("configs/coco_multilabel_resnet50.yaml", True),  # what its scratch baseline builds
        # Zero-init where it is chosen: SimCLR's reference; the demo's 4x LR (its comment).
        ("configs/imagenet_simclr_resnet50.yaml", False),
        ("configs/demo.yaml", False),
    ],
)
def test_supervised_recipes_start_every_residual_branch_live(path, live):
    # With each block's last BN at gamma 0 the blocks are identities, and in a short run they stay
    # near it (gammas ~0.005 after 120 steps): the pretrained ResNet-50 was its stem and four
    # projection shortcuts, and transferred +0.16 mAP worse (BENCHMARKS.md, issue 29).
    from transfer_tf.config import load_config

    cfg = load_config(path, ["data.image_size=32"])
    model = build_model(cfg)
    names = [la.name for la in model.layers if re.match(r"conv[2-5]_block\d+_3_bn$", la.name)]
    assert len(names) == 16  # ResNet-50: 3 + 4 + 6 + 3 blocks
    probe = keras.Model(
        model.input,
        [model.get_layer(n).output for n in names]
        + [model.get_layer(n.replace("_3_bn", "_out")).output for n in names],
    )
    x = tf.random.uniform([4, 32, 32, 3], 0, 255, seed=0)
    outs = probe(tf.cast(x, tf.uint8), training=True)
    branch, block = outs[: len(names)], outs[len(names) :]
    share = [
        float(tf.math.reduce_std(b) / tf.math.reduce_std(o))
        for b, o in zip(branch, block, strict=True)
    ]
    if live:
        assert min(share) > 0.1, dict(zip(names, share, strict=True))
    else:
        assert max(share) == 0.0
