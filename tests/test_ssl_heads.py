"""Projection and predictor heads: layer structure, widths, names, float32 outputs under mixed
precision."""

import keras
import numpy as np
import pytest

from transfer_tf.models.resnet import BatchNormalization
from transfer_tf.ssl import heads


def _kinds(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers[1:]]  # after the Input


def test_simclr_projection_head_structure():
    head = heads.projection_head(64)  # the paper's widths: 2048-2048-128
    assert _kinds(head) == ["Dense", "BatchNormalization", "ReLU"] * 2 + [
        "Dense",
        "BatchNormalization",
    ]
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [2048, 2048, 128]
    assert not any(d.use_bias for d in dense)  # BN follows every Dense
    bns = [layer for layer in head.layers if isinstance(layer, BatchNormalization)]
    assert all(bn.synchronized for bn in bns)
    assert bns[-1].center is False and bns[0].center is True
    assert all(layer.name.startswith("projection_") for layer in head.layers)
    z = head(np.random.default_rng(0).normal(size=[4, 64]).astype("float32"), training=True)
    assert z.shape == (4, 128)
    # No ReLU at the end: the embedding has negative entries.
    assert float(keras.ops.min(z)) < 0.0


def test_byol_heads_structure():
    predictor = heads.predictor_head(8, hidden=16, output=8)
    assert _kinds(predictor) == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    last = predictor.layers[-1]
    assert last.units == 8 and last.use_bias
    projector = heads.byol_mlp(32, name="byol_projection")
    assert [layer.units for layer in projector.layers if isinstance(layer, keras.layers.Dense)] == [
        4096,
        256,
    ]
    assert heads.predictor_head().output_shape == (None, 256)
    with pytest.raises(ValueError):
        heads.mlp_head(4, (), name="empty", last_batchnorm=False)


def test_outputs_are_float32_under_mixed_precision():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        head = heads.projection_head(16, (32, 8))
        predictor = heads.predictor_head(8, hidden=16, output=8)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert head.get_layer("projection_dense_0").compute_dtype == "bfloat16"
    assert head.get_layer("projection_dense_1").compute_dtype == "float32"
    x = np.ones([2, 16], "float32")
    assert head(x).dtype == "float32"
    assert predictor(head(x)).dtype == "float32"
    # Variables stay float32 (mixed precision keeps master weights in float32).
    assert all(v.dtype == "float32" for v in head.weights)
