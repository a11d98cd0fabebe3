"""The segmentation model on our ResNet, and the logits -> class map step (eval and serving).

One flat functional Keras model (as `detection/retinanet.py`), built from keras-cv 0.9's layers:
  input   `images` uint8/float [B, S, S, 3] in 0..255 (S = segmentation.image_size)
  layers  the classifier's stem and stages with their own names (so `transfer.restore`,
          `models.weights.assign_backbone` and the stage freezing of `transfer.schedule` work
          unchanged), then two new stages:
            fpn   the neck: `fpn` (keras_cv.layers.FeaturePyramid, P2-P5 over C2-C5) for
                  semantic_fpn; `fpn_aspp` (keras_cv.layers.SpatialPyramidPooling on C5, rates
                  scaled to the map: settings.aspp_rates) and the `fpn_low_*` C2 projection for
                  deeplabv3plus
            head  `head_*`: Semantic-FPN's per-level conv-GroupNorm-ReLU-2x branches summed at
                  1/4 (Kirillov et al. 2019), or DeepLabV3+'s two 3x3 convs; `head_logits`
  output  float32 logits [B, S/4, S/4, C] (stride 4; the loss and the class maps upsample them
          bilinearly), C = settings.num_segmentation_classes
keras-cv's DeepLabV3Plus and keras-hub's DeepLabV3 nest the backbone as a sub-model, out of reach
of our layer names and stage freezing, so neither is used. Both keras-cv layers keep sublayers in
a dict/list, which Keras 3 wraps where `tf.train.Checkpoint` does not look: they are also set as
named attributes (as retinanet.py does for its heads), so checkpoints hold their weights.

Example:
    model = build_segmenter(cfg.model, cfg.segmentation, num_classes=81)
    maps = Segmenter(model, cfg.segmentation)({"images": x, "image_hw": hw})   # uint8 [B, M, M]
"""

from __future__ import annotations

import math

import keras
import keras_cv
import tensorflow as tf

from transfer_tf.config import ModelConfig
from transfer_tf.data.segmentation import valid_size
from transfer_tf.models.resnet import build_classifier, last_block_output
from transfer_tf.segmentation.settings import IGNORE_LABEL, SegmentationConfig, aspp_rates

OUTPUT_STRIDE = 4


def _conv_norm_relu(x, channels: int, name: str, kernel: int = 3, norm: str = "gn"):
    x = keras.layers.Conv2D(channels, kernel, padding="same", use_bias=False, name=f"{name}_conv")(
        x
    )
    if norm == "gn":  # batch-size independent: segmentation batches are small
        groups = math.gcd(32, channels)
        x = keras.layers.GroupNormalization(groups, name=f"{name}_gn")(x)
    else:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _semantic_fpn(features: dict, seg_cfg: SegmentationConfig):
    fpn = keras_cv.layers.FeaturePyramid(
        min_level=2, max_level=5, num_channels=seg_cfg.fpn_channels, name="fpn"
    )
    for level in fpn.pyramid_levels:
        setattr(fpn, f"lateral_p{level}", fpn.lateral_layers[level])
        setattr(fpn, f"output_p{level}", fpn.output_layers[level])
    pyramid = fpn(features)
    branches = []
    for level in range(2, 6):
        x = pyramid[level]
        for i in range(max(level - 2, 1)):
            x = _conv_norm_relu(x, seg_cfg.head_channels, f"head_p{level}_{i}")
            if level > 2:
                x = keras.layers.UpSampling2D(
                    2, interpolation="bilinear", name=f"head_p{level}_{i}_up"
                )(x)
        branches.append(x)
    return keras.layers.Add(name="head_sum")(branches)


def _deeplabv3plus(features: dict, seg_cfg: SegmentationConfig):
    aspp = keras_cv.layers.SpatialPyramidPooling(
        dilation_rates=aspp_rates(seg_cfg), num_channels=seg_cfg.fpn_channels, name="fpn_aspp"
    )
    x = aspp(features[5])
    for i, branch in enumerate(aspp.aspp_parallel_channels):
        setattr(aspp, f"branch_{i}", branch)
    x = keras.layers.UpSampling2D(8, interpolation="bilinear", name="fpn_aspp_up")(x)  # 1/32->1/4
    low = _conv_norm_relu(features[2], 48, "fpn_low", kernel=1, norm="bn")
    x = keras.layers.Concatenate(name="fpn_concat")([x, low])
    x = _conv_norm_relu(x, seg_cfg.fpn_channels, "head_0", norm="bn")
    return _conv_norm_relu(x, seg_cfg.fpn_channels, "head_1", norm="bn")


def build_segmenter(
    model_cfg: ModelConfig, seg_cfg: SegmentationConfig, num_classes: int
) -> keras.Model:
    """The segmentation model (module doc): images [B, S, S, 3] -> float32 logits
    [B, S/4, S/4, num_classes]. Random weights (fine-tuning restores the backbone); call under
    the strategy scope, after the precision policy is set."""
    classifier = build_classifier(model_cfg, num_classes=1, image_size=seg_cfg.image_size)
    features = {k: last_block_output(classifier, k) for k in (2, 3, 4, 5)}
    if seg_cfg.head == "deeplabv3plus":
        x = _deeplabv3plus(features, seg_cfg)
    else:
        x = _semantic_fpn(features, seg_cfg)
    logits = keras.layers.Conv2D(num_classes, 1, dtype="float32", name="head_logits")(x)
    return keras.Model(classifier.input, logits, name=model_cfg.name)


def upsample_logits(logits: tf.Tensor, size: int) -> tf.Tensor:
    """float32 [B, s, s, C] logits -> [B, size, size, C] (bilinear): the model input's frame."""
    return tf.image.resize(tf.cast(logits, tf.float32), [size, size])


def class_map_at_original(logits: tf.Tensor, hw: tf.Tensor, size: int) -> tf.Tensor:
    """One image's logits float32 [s, s, C] (of a `size` x `size` eval input, `resize_and_pad`'s
    geometry) -> (uint8 class map [H, W] at the original size `hw` int32 [2], float32 [H, W]
    softmax probability of that class). The part of the input the image fills is upsampled
    bilinearly to H x W before the argmax."""
    full = upsample_logits(logits[None], size)[0]
    filled = valid_size(hw, size)
    original = tf.image.resize(full[: filled[0], : filled[1]], hw)
    classes = tf.argmax(original, axis=-1, output_type=tf.int32)
    score = tf.reduce_max(tf.nn.softmax(original, axis=-1), axis=-1)
    return tf.cast(classes, tf.uint8), score


class Segmenter:
    """A segmentation model plus the eval post-processing: `{"images": uint8 [B, S, S, 3],
    "image_hw": int32 [B, 2]}` -> uint8 [B, M, M] class maps at each image's original size,
    padded with 255 (M = segmentation.max_eval_size). Callable like a Keras model (`training`
    is ignored), so `training.evaluation.evaluate_model` runs it."""

    def __init__(self, model: keras.Model, seg_cfg: SegmentationConfig):
        self.model = model
        self.size = seg_cfg.image_size
        self.max_size = seg_cfg.max_eval_size

    def __call__(self, inputs: dict, training: bool = False) -> tf.Tensor:
        del training
        logits = self.model(inputs["images"], training=False)
        m = self.max_size

        def one(args):
            classes, _ = class_map_at_original(args[0], args[1], self.size)
            h, w = tf.unstack(tf.shape(classes))
            return tf.pad(classes, [[0, m - h], [0, m - w]], constant_values=IGNORE_LABEL)

        # Images differ in original size: one at a time (also bounds the upsampled logits'
        # memory to one image's).
        return tf.map_fn(
            one,
            (tf.cast(logits, tf.float32), inputs["image_hw"]),
            fn_output_signature=tf.TensorSpec([m, m], tf.uint8),
        )
