"""MLP heads of self-supervised methods: SimCLR v2's projection head, BYOL's projector/predictor.

Each head is a small functional `keras.Model` over the backbone's pooled features `[B, C]`
(C = 2048 for ResNet-50). Hidden layers compute in the global dtype policy (bfloat16/float16
under mixed precision); the last Dense and its BatchNormalization are float32, so the
embeddings, and the losses on them, are float32 whatever the policy. Layer names start with the
head's name, so a fine-tuning restore can drop exactly these weights by name.

BatchNormalization is the project's (`models.resnet.BatchNormalization`: moving statistics
averaged across replicas when read), synchronized across replicas by default: SimCLR's "global
BN" (per-replica BN statistics let a contrastive model cheat, SimCLR sec. B.5).

Example:
    projector = projection_head(2048)                          # SimCLR v2: 2048-2048-128
    z = projector(pooled_features, training=True)              # float32 [B, 128]
    predictor = predictor_head(256)                            # BYOL: 4096-256
    p = predictor(projector_byol(pooled_features), training=True)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from transfer_tf.models.resnet import BatchNormalization


def mlp_head(
    input_dim: int,
    widths: Sequence[int],
    *,
    name: str,
    last_batchnorm: bool,
    hidden_bias: bool = False,
    last_bias: bool = False,
    synchronized: bool = True,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    dtype: str | None = None,
) -> keras.Model:
    """`(Dense -> BN -> ReLU) x (len(widths) - 1)` then `Dense [-> BN]`, as a functional model.

    Args:
      input_dim: C of the `[B, C]` input features.
      widths: output width of each Dense (the last one is the embedding size), >= 1 entries.
      name: model name and prefix of its layer names (`{name}_dense_0`, `{name}_bn_0`, ...).
      last_batchnorm: BN (scale only, no centre: a bias after BN is redundant) after the last
        Dense (SimCLR v2) or not (BYOL).
      hidden_bias / last_bias: Dense biases; a bias right before BN is redundant, so they default
        to off; BYOL's last Dense has one (`last_bias=True`).
      synchronized: BN statistics over the global batch under a multi-replica strategy.
      bn_momentum, bn_epsilon: SimCLR's 0.9 / 1e-5 (Keras' defaults are 0.99 / 1e-3).
      dtype: policy of the hidden layers (None: the global policy).
    Returns:
      `keras.Model`: `[B, input_dim]` any float -> float32 `[B, widths[-1]]`.
    """
    if not widths:
        raise ValueError(f"mlp_head {name!r} needs at least one width")
    bn = dict(synchronized=synchronized, momentum=bn_momentum, epsilon=bn_epsilon)
    inputs = keras.Input((input_dim,), name=f"{name}_features")
    x = inputs
    for i, width in enumerate(widths[:-1]):
        x = keras.layers.Dense(width, use_bias=hidden_bias, dtype=dtype, name=f"{name}_dense_{i}")(
            x
        )
        x = BatchNormalization(dtype=dtype, name=f"{name}_bn_{i}", **bn)(x)
        x = keras.layers.ReLU(dtype=dtype, name=f"{name}_relu_{i}")(x)
    last = len(widths) - 1
    # float32: the embedding feeds a temperature-scaled softmax / cosine loss.
    x = keras.layers.Dense(
        widths[-1], use_bias=last_bias, dtype="float32", name=f"{name}_dense_{last}"
    )(x)
    if last_batchnorm:
        x = BatchNormalization(center=False, dtype="float32", name=f"{name}_bn_{last}", **bn)(x)
    return keras.Model(inputs, x, name=name)


def projection_head(
    input_dim: int,
    widths: Sequence[int] = (2048, 2048, 128),
    *,
    name: str = "projection",
    synchronized: bool = True,
    dtype: str | None = None,
) -> keras.Model:
    """SimCLR v2 projection head: `Dense-BN-ReLU x (n - 1)`, then `Dense-BN` (no ReLU).

    Default widths are the paper's 3-layer head for ResNet-50 (2048-2048-128). SimCLR v2
    fine-tunes from the first hidden layer of this head; we transfer the backbone only.

    Returns:
      `keras.Model`: `[B, input_dim]` -> float32 `[B, widths[-1]]`.
    """
    return mlp_head(
        input_dim,
        widths,
        name=name,
        last_batchnorm=True,
        synchronized=synchronized,
        dtype=dtype,
    )


def byol_mlp(
    input_dim: int,
    hidden: int = 4096,
    output: int = 256,
    *,
    name: str,
    synchronized: bool = True,
    dtype: str | None = None,
) -> keras.Model:
    """BYOL's MLP (projector and predictor alike): `Dense(hidden)-BN-ReLU-Dense(output)`, with a
    bias on the last Dense and no BN after it.

    Returns:
      `keras.Model`: `[B, input_dim]` -> float32 `[B, output]`.
    """
    return mlp_head(
        input_dim,
        (hidden, output),
        name=name,
        last_batchnorm=False,
        last_bias=True,
        synchronized=synchronized,
        dtype=dtype,
    )


def predictor_head(
    input_dim: int = 256,
    hidden: int = 4096,
    output: int = 256,
    *,
    name: str = "predictor",
    synchronized: bool = True,
    dtype: str | None = None,
) -> keras.Model:
    """BYOL's predictor q (online network only): `byol_mlp` on the projection (4096-256).

    Returns:
      `keras.Model`: `[B, input_dim]` -> float32 `[B, output]`.
    """
    return byol_mlp(input_dim, hidden, output, name=name, synchronized=synchronized, dtype=dtype)
