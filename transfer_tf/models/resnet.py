"""ResNet classifiers (10/18/34/50/101/152) with named stages, built for pretraining and transfer.

ResNet-50/101/152 are `keras.applications` ResNets (same layer names, so the standard Keras
ImageNet weights file loads into them): `model.resnet_variant: v1` as built there (stride 2 on the
first 1x1 conv of a stage), or `v1.5` with that stride moved to the block's 3x3 conv (Model Garden,
NVIDIA, torchvision). Both have the same variables; `model_signature` tells them apart. ResNet-18/34
are basic-block ResNets written here with the same naming convention (`conv1_*`, `pool1_*`,
`conv{2..5}_block{i}_{j}_{conv,bn}`, `..._out`). ResNet-10 is ResNet-18 with one basic block per
stage (4.9M parameters): the same stages, strides and widths at about two thirds of ResNet-18's
graph-building and tracing time, for smoke runs and tests where depth buys nothing.

The classifier takes uint8 (or float) images `[B, H, W, 3]` in 0..255 and returns float32 logits
`[B, num_classes]`, float32 even under a mixed precision policy. Normalisation is its first layer.
Every layer belongs to exactly one stage of `STAGES`:

    stem    input, normalisation, conv1_*, pool1_*
    stage1  conv2_*      stage2  conv3_*      stage3  conv4_*      stage4  conv5_*
    fpn     fpn_* (a detector's feature pyramid, `transfer_tf.detection`; none in a classifier)
    head    head_pool -> head_dropout (if model.dropout > 0) -> head_dense (new for transfer);
            a detector's class and box heads

Example:
    model = build_classifier(cfg.model, num_classes=cfg.data.num_classes)
    logits = model(tf.zeros([2, 224, 224, 3], tf.uint8))         # float32 [2, num_classes]
    for layer in layers_by_stage(model)["stage1"]:
        layer.trainable = False                                   # freeze a stage
"""

from __future__ import annotations

import re

import keras
import tensorflow as tf

from transfer_tf.config import ModelConfig
from transfer_tf.errors import UsageError

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "fpn", "head")
# Stages a pretrained backbone does not hold: new layers of a transfer model.
NEW_STAGES = ("fpn", "head")

# ImageNet BGR mean used by keras.applications.resnet.preprocess_input ("caffe" mode).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

_BOTTLENECK = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
_BASIC = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}
_STAGE_OF_PREFIX = {"conv2": "stage1", "conv3": "stage2", "conv4": "stage3", "conv5": "stage4"}


@keras.saving.register_keras_serializable(package="transfer_tf")
class InputNormalization(keras.layers.Layer):
    """Casts 0..255 images to the compute dtype and normalises them per channel.

    `mode="standardize"`: `(rgb - mean) / stddev`. `mode="caffe"`: RGB -> BGR, minus
    `CAFFE_MEAN_BGR`, unscaled (keras.applications.resnet.preprocess_input). No weights, so it never
    shifts the layer order seen by weight files.

    Input: uint8 or float `[B, H, W, 3]`; output: compute dtype `[B, H, W, 3]`.
    """

    def __init__(
        self,
        mode: str = "standardize",
        mean: tuple[float, ...] = (123.675, 116.28, 103.53),
        stddev: tuple[float, ...] = (58.395, 57.12, 57.375),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in ("standardize", "caffe"):
            raise ValueError(f"InputNormalization mode must be standardize|caffe, got {mode!r}")
        self.mode = mode
        self.mean = tuple(float(m) for m in mean)
        self.stddev = tuple(float(s) for s in stddev)

    def call(self, images):
        x = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)
            return x - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, self.compute_dtype)
        mean = keras.ops.convert_to_tensor(self.mean, self.compute_dtype)
        inv_std = keras.ops.convert_to_tensor([1.0 / s for s in self.stddev], self.compute_dtype)
        return (x - mean) * inv_std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "mean": self.mean, "stddev": self.stddev}


_MOVING_STATISTICS = ("moving_mean", "moving_variance")


def _replica_mean_variable(next_creator, **kwargs):
    # tf.distribute's own convention for BN statistics (tf.keras did the same): each replica
    # updates its local copy, and a read outside the replicas (checkpoint, export, get_weights)
    # returns their mean.
    kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
    kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)


@keras.saving.register_keras_serializable(package="transfer_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras BatchNormalization whose moving statistics are averaged across replicas.

    Keras 3 creates `moving_mean` / `moving_variance` with aggregation `none`: under a
    MirroredStrategy every replica keeps statistics of its own 1/N of the batch, and a checkpoint
    holds the first replica's. Here they are ON_READ + MEAN variables (Model Garden's tf.keras
    convention): replicas update local copies, and every read outside a replica context averages
    them. Averaged EMAs are the EMA of the replicas' averaged batch moments, so the checkpointed
    mean equals that of one replica on the global batch, and the variance is the mean of the
    per-replica variances (it misses the spread of the per-replica means; with
    `synchronized=True` the replicas already agree and the average changes nothing).
    Without a strategy (one device) they are ordinary variables.
    """

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") in _MOVING_STATISTICS and not kwargs.get("trainable", True):
            with tf.variable_creator_scope(_replica_mean_variable):
                return super().add_weight(*args, **{**kwargs, "aggregation": "mean"})
        return super().add_weight(*args, **kwargs)


def _basic_block(x, filters: int, stride: int, project: bool, name: str, bn: dict):
    """A ResNet-10/18/34 residual block: two 3x3 convs (stride on the first), keras naming."""
    layers = keras.layers
    shortcut = x
    if project:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(
            x
        )
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn", **bn)(shortcut)
    if stride > 1:
        # Explicit padding keeps stride-2 convs identical to the TF/PyTorch reference ResNets.
        x = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
        x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_1_conv")(x)
    else:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_1_bn", **bn)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_2_bn", **bn)(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _basic_resnet(x, blocks: tuple[int, ...]):
    """Stem + four stages of basic blocks on tensor `x` (normalised images)."""
    layers = keras.layers
    bn = {"epsilon": 1e-5}  # momentum/epsilon/sync are set from the config afterwards
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(name="conv1_bn", **bn)(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (n, filters) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            x = _basic_block(
                x,
                filters,
                stride,
                project=(i == 0 and stage > 0),
                name=f"conv{stage + 2}_block{i + 1}",
                bn=bn,
            )
    return x


def _last_bn_pattern(name: str) -> re.Pattern:
    last = "3" if name in _BOTTLENECK else "2"
    return re.compile(rf"^conv[2-5]_block\d+_{last}_bn$")


# The stride-2 convs of the first block of stages 2-4 (keras.applications naming).
_V1_STRIDED = re.compile(r"^conv[345]_block1_1_conv$")
_V15_STRIDED = re.compile(r"^conv[345]_block1_2_conv$")


def _configure_layers(model: keras.Model, model_cfg: ModelConfig) -> keras.Model:
    """Clones `model`, rebuilding every BatchNormalization from the config (fresh weights), and for
    a bottleneck ResNet with `resnet_variant: v1.5` moving each stage's stride from the block's
    first 1x1 conv to its 3x3 conv (padding `same`, as Model Garden's bottleneck block).

    Momentum/epsilon/synchronized come from `model_cfg`; with `zero_init_residual_gamma` the last
    BN of each residual block starts with gamma = 0, so every block starts as the identity.
    """
    last_bn = _last_bn_pattern(model_cfg.name)
    v15 = model_cfg.name in _BOTTLENECK and model_cfg.resnet_variant == "v1.5"

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if v15 and _V1_STRIDED.match(layer.name):
            config["strides"] = (1, 1)
        elif v15 and _V15_STRIDED.match(layer.name):
            config["strides"] = (2, 2)
        if isinstance(layer, keras.layers.BatchNormalization):
            config.update(
                momentum=model_cfg.batchnorm_momentum,
                epsilon=model_cfg.batchnorm_epsilon,
                synchronized=model_cfg.sync_batchnorm,
            )
            if model_cfg.zero_init_residual_gamma and last_bn.match(layer.name):
                config["gamma_initializer"] = "zeros"
            return BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def build_classifier(
    model_cfg: ModelConfig, num_classes: int, image_size: int | None = None
) -> keras.Model:
    """Builds the ResNet classifier described by `model_cfg`.

    Args:
      model_cfg: `cfg.model` (name, dropout, BN options, input normalisation). Weights are
        random: `model.init_weights` is applied by `training.run_setup.build_model`.
      num_classes: width of the head.
      image_size: fixed input side, or None for any size (the model is fully convolutional).
    Returns:
      A functional `keras.Model`: uint8/float `[B, H, W, 3]` (0..255) -> float32 logits
      `[B, num_classes]`. Layers are created under the current dtype policy (set the mixed
      precision policy before calling); the head's dense layer is always float32.
    Raises:
      UsageError: unknown model name.
    """
    if model_cfg.name not in _BOTTLENECK and model_cfg.name not in _BASIC:
        raise UsageError(
            f"config key 'model.name': unknown model {model_cfg.name!r} "
            f"(expected one of {', '.join(sorted({**_BOTTLENECK, **_BASIC}))})"
        )
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = InputNormalization(
        model_cfg.input_preprocessing,
        model_cfg.mean_rgb,
        model_cfg.stddev_rgb,
        name="stem_normalize",
    )(inputs)
    if model_cfg.name in _BOTTLENECK:
        features = _APPLICATIONS[model_cfg.name](
            include_top=False, weights=None, input_tensor=x
        ).output
    else:
        features = _basic_resnet(x, _BASIC[model_cfg.name])
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    if model_cfg.dropout > 0:
        x = keras.layers.Dropout(model_cfg.dropout, name="head_dropout")(x)
    # float32 logits keep softmax/sigmoid losses stable under bfloat16/float16 compute.
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head_dense")(x)
    model = _configure_layers(keras.Model(inputs, logits, name=model_cfg.name), model_cfg)
    return model


def model_signature(model: keras.Model) -> dict:
    """What a backbone's weights depend on beyond their shapes, read from a built classifier:
    `{"name", "input_preprocessing", "mean_rgb", "stddev_rgb", "resnet_variant"}` (variant `v1`
    or `v1.5` for bottleneck ResNets, None for resnet10/18/34; mean/stddev None in `caffe` mode).
    Compare with `config_signature` of a source's config (transfer.restore does). Entries a model
    not built here cannot tell (no `stem_normalize` layer, ...) are None."""
    by_name = {layer.name: layer for layer in model.layers}
    norm = by_name.get("stem_normalize")
    mode = norm.mode if isinstance(norm, InputNormalization) else None
    variant = None
    if model.name in _BOTTLENECK and "conv3_block1_2_conv" in by_name:
        strided = tuple(by_name["conv3_block1_2_conv"].strides) == (2, 2)
        variant = "v1.5" if strided else "v1"
    return {
        "name": model.name,
        "input_preprocessing": mode,
        "mean_rgb": list(norm.mean) if mode == "standardize" else None,
        "stddev_rgb": list(norm.stddev) if mode == "standardize" else None,
        "resnet_variant": variant,
    }


def config_signature(model_cfg: ModelConfig) -> dict:
    """`model_signature` of the classifier that `build_classifier(model_cfg, ...)` builds."""
    standardize = model_cfg.input_preprocessing == "standardize"
    return {
        "name": model_cfg.name,
        "input_preprocessing": model_cfg.input_preprocessing,
        "mean_rgb": [float(m) for m in model_cfg.mean_rgb] if standardize else None,
        "stddev_rgb": [float(s) for s in model_cfg.stddev_rgb] if standardize else None,
        "resnet_variant": model_cfg.resnet_variant if model_cfg.name in _BOTTLENECK else None,
    }


def stage_of(layer_name: str) -> str:
    """Returns the stage (one of STAGES) of a layer of a classifier built here."""
    if layer_name.startswith("head_"):
        return "head"
    if layer_name == "fpn" or layer_name.startswith("fpn_"):
        return "fpn"
    prefix = layer_name.split("_", 1)[0]
    return _STAGE_OF_PREFIX.get(prefix, "stem")


def layers_by_stage(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """Groups the model's layers by stage: `{stage: [layers in graph order]}` for every STAGES key."""
    groups: dict[str, list[keras.layers.Layer]] = {s: [] for s in STAGES}
    for layer in model.layers:
        groups[stage_of(layer.name)].append(layer)
    return groups


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """All layers except the head and a detector's FPN (what a pretrained-weights file restores)."""
    return [layer for layer in model.layers if stage_of(layer.name) not in NEW_STAGES]


def last_block_output(classifier: keras.Model, stage: int):
    """The output tensor of the last residual block of `conv{stage}` (C2..C5: strides 4..32),
    the feature a detector's or segmenter's neck reads."""
    pattern = re.compile(rf"^conv{stage}_block(\d+)_out$")
    blocks = [(int(m.group(1)), la) for la in classifier.layers if (m := pattern.match(la.name))]
    return max(blocks, key=lambda b: b[0])[1].output


def features_model(model: keras.Model) -> keras.Model:
    """A model sharing `model`'s layers that outputs the backbone's last feature map
    `[B, h, w, C]` (C = 2048 for bottleneck ResNets, 512 for 10/18/34)."""
    head_pool = model.get_layer("head_pool")
    return keras.Model(model.input, head_pool.input, name=f"{model.name}_features")


def is_decayed(variable: keras.Variable) -> bool:
    """Weight decay applies to conv/dense kernels only (not BN gamma/beta, not biases).

    The one "is this variable decayed" predicate: the loop's L2 term and the optimizers'
    decoupled/LARS decay both use it, on the model's variables (optimizers key the answer on the
    variable, so replica copies under a tf.distribute strategy inherit it).
    """
    return variable.path.endswith("kernel") or variable.name == "kernel"
