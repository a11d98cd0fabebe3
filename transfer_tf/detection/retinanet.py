"""RetinaNet on our ResNet, built from keras-cv 0.9's pieces: the only module that imports them.

Nothing else in the project sees which library builds the detector. What comes from keras-cv
(frozen at 0.9, so these are stable): `AnchorGenerator` (anchors), `retinanet.LabelEncoder`
(IoU matching through `BoxMatcher`, which `_BestAnchorMatcher` extends, and the box encoding),
`retinanet.FeaturePyramid` (P3-P7), `retinanet.PredictionHead` (class/box towers,
prior-probability bias), `losses.FocalLoss`, `losses.SmoothL1Loss`,
`layers.MultiClassNonMaxSuppression`, and the box decoding RetinaNet's own `decode_predictions`
uses (`bounding_box.converters._decode_deltas_to_boxes`, the one private name).
Why keras-cv and not keras-hub: see transfer_tf/detection/__init__.py.

The model (`build_retinanet`) is one flat functional Keras model:
  input   `images` uint8/float [B, S, S, 3] in 0..255 (S = detection.image_size)
  layers  the classifier's stem and stages with their own names (`conv1_conv`, `conv3_block4_out`,
          ...: so `transfer.restore`, `models.weights.assign_backbone` and the stage freezing of
          `transfer.schedule` work unchanged), `fpn` (stage fpn), `head_class` / `head_box` and
          their `head_*` reshapes (stage head)
  output  {"box": float32 [B, A, 4] encoded offsets, "classification": float32 [B, A, C] logits}
          A = sum over P3..P7 of (S / stride)^2 x anchors per location; anchors in
          `anchors(det_cfg)` order (level, row, column, anchor)
The model's name is its backbone's (`resnet50`): restore and the export's model signature compare
it with the source's.

Boxes everywhere here are `yxyx` in pixels of the model input. Encoded offsets are keras-cv's
coding (centre shift / anchor size, log size ratio) divided by `detection.box_variance` (keras-cv's
0.1, 0.1, 0.2, 0.2 or Model Garden's unscaled 1, 1, 1, 1: `detection.recipe`).

Example:
    model = build_retinanet(cfg.model, cfg.detection, num_classes=80)
    labeler = make_labeler(cfg.detection)
    box_t, cls_t = labeler(images, boxes, classes)          # [B, A, 4], [B, A] (-1 bg, -2 ignore)
    cls_sum, box_sum, num_pos = loss_terms(model(images), box_t, cls_t, cfg.detection)
    dets = decode(model(images), cfg.detection)             # boxes/scores/classes/num_detections
"""

from __future__ import annotations

import math

import keras
import keras_cv
import tensorflow as tf
from keras_cv.src.bounding_box.converters import _decode_deltas_to_boxes

from transfer_tf.config import ModelConfig
from transfer_tf.detection.settings import DetectionConfig
from transfer_tf.models.resnet import build_classifier, last_block_output

BOX_FORMAT = "yxyx"
STRIDES = (8, 16, 32, 64, 128)  # P3..P7
# Anchors kept (by best class score) before NMS: Model Garden's pre_nms_top_k.
PRE_NMS_TOP_K = 5000
BACKGROUND, IGNORE = -1, -2


def num_anchors_per_location(det_cfg: DetectionConfig) -> int:
    return det_cfg.num_scales * len(det_cfg.aspect_ratios)


def anchor_generator(det_cfg: DetectionConfig) -> keras_cv.layers.AnchorGenerator:
    """keras-cv's generator for P3..P7: base size `anchor_size * stride`, `num_scales` octave
    scales, `aspect_ratios` (width / height), centres at (i + 0.5) x stride, yxyx pixels, clipped
    to the image where detection.clip_anchors. The same boxes as Model Garden's
    `Anchor._generate_boxes` (which never clips), in the same order."""
    return keras_cv.layers.AnchorGenerator(
        bounding_box_format=BOX_FORMAT,
        sizes=[det_cfg.anchor_size * s for s in STRIDES],
        scales=[2 ** (i / det_cfg.num_scales) for i in range(det_cfg.num_scales)],
        aspect_ratios=list(det_cfg.aspect_ratios),
        strides=list(STRIDES),
        clip_boxes=bool(det_cfg.clip_anchors),
        # It emits anchors in its compute dtype: bfloat16 under a mixed policy would move a
        # 640 px frame's anchors by up to 2 px.
        dtype="float32",
    )


def anchors(det_cfg: DetectionConfig, image_size: int | None = None) -> tf.Tensor:
    """All anchors of a `image_size` (default detection.image_size) input: float32 [A, 4] yxyx
    pixels, in the model's output order."""
    size = image_size or det_cfg.image_size
    levels = anchor_generator(det_cfg)(image_shape=(size, size, 3))
    return tf.concat(list(levels.values()), axis=0)


class _NoMetric:
    """Stands in for the label encoder's matched-boxes metric: its variable updates would run in
    every replica's step (a cross-replica sum per step under a strategy) for a number nobody reads."""

    def update_state(self, *args, **kwargs) -> None:
        del args, kwargs


class _BestAnchorMatcher(keras_cv.layers.BoxMatcher):
    """keras-cv's threshold matcher, then each ground-truth box is also matched (positive) to its
    best anchor, as Model Garden's `force_match_for_each_col=True`.

    keras-cv's own forced matching is not used: it forces padding columns too (a padding box's
    all-zero IoU column "prefers" anchor 0). Here a column is forced only when some anchor
    overlaps it (IoU > 0): padding rows (-1, outside the image) and zero-area boxes overlap none,
    and every box of positive area inside the image overlaps some anchor (they tile the image).
    Where two boxes share a best anchor it goes to the first of them (Model Garden's rule).
    Input IoU `[B, A, M]`; returns (matched box int32 `[B, A]`, match value int32 `[B, A]`).
    """

    def call(self, similarity_matrix):
        columns, values = super().call(similarity_matrix)
        iou = tf.cast(similarity_matrix, tf.float32)
        batch, num_anchors, num_boxes = tf.unstack(tf.shape(iou))
        best_anchor = tf.argmax(iou, axis=1, output_type=tf.int32)  # [B, M]
        real = tf.reduce_max(iou, axis=1) > 0.0  # [B, M]
        box_index = tf.broadcast_to(tf.range(num_boxes)[None], [batch, num_boxes])
        image_index = tf.broadcast_to(tf.range(batch)[:, None], [batch, num_boxes])
        # Per anchor, the lowest index of a real box whose best anchor it is (num_boxes: none).
        forced = tf.tensor_scatter_nd_min(
            tf.fill([batch, num_anchors], num_boxes),
            tf.stack([image_index, best_anchor], axis=-1),
            tf.where(real, box_index, num_boxes),
        )
        is_forced = forced < num_boxes
        positive = tf.fill(tf.shape(values), tf.constant(self.match_values[-1], values.dtype))
        return (
            tf.where(is_forced, forced, tf.cast(columns, tf.int32)),
            tf.where(is_forced, positive, values),
        )


class Labeler:
    """Training targets from ground truth (keras-cv's RetinaNet label encoder).

    Call with images `[B, S, S, 3]` (only the shape is read), boxes float32 `[B, M, 4]` yxyx pixels
    (padding rows -1) and classes `[B, M]` contiguous indices (padding -1). Returns box targets
    float32 `[B, A, 4]` (encoded offsets of the matched box) and class targets float32 `[B, A]`:
    the class index for anchors with IoU >= match_threshold, -1 (background) below
    unmatched_threshold, -2 (ignored) in between (none under Model Garden's equal thresholds);
    with `detection.force_match` each box's best anchor is positive for it too, whatever its IoU
    (`_BestAnchorMatcher`). Box targets are divided by detection.box_variance.
    """

    def __init__(self, det_cfg: DetectionConfig):
        self._encoder = keras_cv.models.retinanet.LabelEncoder(
            bounding_box_format=BOX_FORMAT,
            anchor_generator=anchor_generator(det_cfg),
            positive_threshold=det_cfg.match_threshold,
            negative_threshold=det_cfg.unmatched_threshold,
            box_variance=tuple(det_cfg.box_variance),
            background_class=float(BACKGROUND),
            ignore_class=float(IGNORE),
            # float32 whatever the mixed precision policy: IoUs of boxes in a 640 px frame
            # computed in bfloat16 (8 bits of mantissa) would misassign anchors.
            dtype="float32",
        )
        self._encoder.matched_boxes_metric = _NoMetric()
        if det_cfg.force_match:
            self._encoder.box_matcher = _BestAnchorMatcher(
                thresholds=[det_cfg.unmatched_threshold, det_cfg.match_threshold],
                match_values=[-1, -2, 1],  # the encoder's: background, ignored, positive
            )
        # Its matcher is a layer of its own, built under the global policy.
        self._encoder.box_matcher.dtype_policy = "float32"

    def __call__(self, images, boxes, classes) -> tuple[tf.Tensor, tf.Tensor]:
        labels = {"boxes": tf.cast(boxes, tf.float32), "classes": tf.cast(classes, tf.float32)}
        box_targets, class_targets = self._encoder(images, labels)
        return tf.cast(box_targets, tf.float32), tf.cast(class_targets, tf.float32)


def build_retinanet(
    model_cfg: ModelConfig, det_cfg: DetectionConfig, num_classes: int
) -> keras.Model:
    """RetinaNet on the ResNet `model_cfg` describes (see module doc for inputs/outputs/layers).

    Weights are random (the backbone is restored by the fine-tuning job); the classification
    layer's bias starts at -log((1 - p) / p), p = detection.prior_probability, the box layer's at 0.
    Call under the strategy scope, after the precision policy is set; outputs are float32.
    """
    classifier = build_classifier(model_cfg, num_classes=1, image_size=det_cfg.image_size)
    features = {f"P{k}": last_block_output(classifier, k) for k in (3, 4, 5)}
    pyramid = keras_cv.models.retinanet.FeaturePyramid(name="fpn")(features)
    per_location = num_anchors_per_location(det_cfg)
    prior = -math.log((1.0 - det_cfg.prior_probability) / det_cfg.prior_probability)
    class_head = keras_cv.models.retinanet.PredictionHead(
        output_filters=per_location * num_classes,
        bias_initializer=keras.initializers.Constant(prior),
        num_conv_layers=det_cfg.head_convs,
        name="head_class",
    )
    box_head = keras_cv.models.retinanet.PredictionHead(
        output_filters=per_location * 4,
        bias_initializer=keras.initializers.Zeros(),
        num_conv_layers=det_cfg.head_convs,
        name="head_box",
    )
    for head in (class_head, box_head):
        # keras-cv keeps a head's tower convs in a Python list, which Keras 3 wraps in its own
        # TrackedList: tf.train.Checkpoint never sees them, so checkpoints silently lacked their
        # weights (a restored or resumed detector got fresh towers). As named attributes they are
        # checkpoint dependencies like the FPN's convs (tests/test_detection_targets.py).
        for i, conv in enumerate(head.conv_layers):
            setattr(head, f"tower_conv_{i}", conv)
    boxes, logits = [], []
    for level, feature in zip(range(3, 8), pyramid, strict=True):
        boxes.append(keras.layers.Reshape((-1, 4), name=f"head_box_p{level}")(box_head(feature)))
        logits.append(
            keras.layers.Reshape((-1, num_classes), name=f"head_class_p{level}")(
                class_head(feature)
            )
        )
    # float32 outputs (the Concatenate casts) keep the focal loss and NMS stable under bfloat16.
    outputs = {
        "box": keras.layers.Concatenate(axis=1, dtype="float32", name="head_box_all")(boxes),
        "classification": keras.layers.Concatenate(axis=1, dtype="float32", name="head_class_all")(
            logits
        ),
    }
    return keras.Model(classifier.input, outputs, name=model_cfg.name)


def loss_terms(
    predictions: dict[str, tf.Tensor],
    box_targets: tf.Tensor,
    class_targets: tf.Tensor,
    det_cfg: DetectionConfig,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Summed (not yet normalised) losses of a batch: focal loss over every non-ignored anchor
    and class, box loss (detection.box_loss at box_loss_delta, the mean of an anchor's 4 offsets,
    times box_loss_weight) over positive anchors, and the number of positive anchors. All float32
    scalars. With Model Garden's recipe this is its build_losses before normalising: Huber(0.1)
    on unscaled offsets x 50."""
    logits = tf.cast(predictions["classification"], tf.float32)
    box_pred = tf.cast(predictions["box"], tf.float32)
    num_classes = logits.shape[-1]
    positive = tf.cast(class_targets >= 0, tf.float32)
    counted = tf.cast(tf.not_equal(class_targets, float(IGNORE)), tf.float32)
    # one_hot of -1 / -2 is all zeros: background and ignored anchors have no positive class.
    onehot = tf.one_hot(tf.cast(class_targets, tf.int32), num_classes, dtype=tf.float32)
    focal = keras_cv.losses.FocalLoss(
        alpha=det_cfg.focal_alpha, gamma=det_cfg.focal_gamma, from_logits=True, reduction=None
    )
    if det_cfg.box_loss == "huber":
        box_loss = keras.losses.Huber(delta=det_cfg.box_loss_delta, reduction=None)
    else:
        box_loss = keras_cv.losses.SmoothL1Loss(l1_cutoff=det_cfg.box_loss_delta, reduction=None)
    class_sum = tf.reduce_sum(focal(onehot, logits) * counted)
    box_sum = det_cfg.box_loss_weight * tf.reduce_sum(box_loss(box_targets, box_pred) * positive)
    return class_sum, box_sum, tf.reduce_sum(positive)


def decode_boxes(box_offsets: tf.Tensor, det_cfg: DetectionConfig) -> tf.Tensor:
    """Encoded offsets float [B, A, 4] (the model's `box` output, or `Labeler` targets) -> boxes
    float32 [B, A, 4] yxyx in pixels of the model input (not clipped)."""
    size = det_cfg.image_size
    return _decode_deltas_to_boxes(
        anchors=anchors(det_cfg, size),
        boxes_delta=tf.cast(box_offsets, tf.float32),
        anchor_format=BOX_FORMAT,
        box_format=BOX_FORMAT,
        variance=tuple(det_cfg.box_variance),
        image_shape=(size, size, 3),
    )


def decode(predictions: dict[str, tf.Tensor], det_cfg: DetectionConfig) -> dict[str, tf.Tensor]:
    """Raw outputs -> final detections (per-class NMS) in pixels of the model input.

    Returns {"boxes": float32 [B, K, 4] yxyx clipped to the input, "scores": float32 [B, K],
    "classes": int32 [B, K] contiguous class indices, "num_detections": int32 [B]};
    K = detection.max_detections, rows past num_detections are padding (class -1, score 0).
    """
    logits = tf.cast(predictions["classification"], tf.float32)
    boxes = tf.clip_by_value(
        decode_boxes(predictions["box"], det_cfg), 0.0, float(det_cfg.image_size)
    )
    # Keep the anchors with the best class scores (Model Garden's pre-NMS top-k): per-class NMS
    # over every anchor of a 640 px input would see ~77k candidates per class.
    k = min(PRE_NMS_TOP_K, int(logits.shape[1]))
    _, top = tf.math.top_k(tf.reduce_max(logits, axis=-1), k=k)
    boxes = tf.gather(boxes, top, batch_dims=1)
    logits = tf.gather(logits, top, batch_dims=1)
    nms = keras_cv.layers.MultiClassNonMaxSuppression(
        bounding_box_format=BOX_FORMAT,
        from_logits=True,
        iou_threshold=det_cfg.nms_iou,
        confidence_threshold=det_cfg.score_threshold,
        max_detections=det_cfg.max_detections,
        max_detections_per_class=det_cfg.max_detections,
        dtype="float32",  # a Keras layer: it would cast to a bfloat16 policy's compute dtype
    )
    out = nms(boxes, logits)
    num = tf.cast(out["num_detections"], tf.int32)
    valid = tf.sequence_mask(num, det_cfg.max_detections)
    return {
        "boxes": tf.where(valid[..., None], out["boxes"], 0.0),
        "scores": tf.where(valid, out["confidence"], 0.0),
        "classes": tf.where(valid, tf.cast(out["classes"], tf.int32), -1),
        "num_detections": num,
    }
