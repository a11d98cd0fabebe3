"""The segmentation model, objective and accumulator (transfer_tf/segmentation): the backbone keeps
the classifier's layer names with the new layers in stages of their own, checkpoints hold every
weight (keras-cv keeps sublayers in dicts and lists), float32 logits under bfloat16, the ignore
label leaves the loss alone, the replicas' shares sum to the one-device loss (and the eval pass
runs under the same two replicas), and mIoU / pixel accuracy / per-class IoU from a hand-counted
confusion matrix."""

import numpy as np
import pytest
import tensorflow as tf
from two_replicas import run_on_two_cpus

from transfer_tf.config import ModelConfig
from transfer_tf.models.resnet import build_classifier, layers_by_stage
from transfer_tf.segmentation.evaluation import ConfusionAccumulator
from transfer_tf.segmentation.model import build_segmenter, class_map_at_original
from transfer_tf.segmentation.objective import pixel_loss_terms
from transfer_tf.segmentation.settings import SegmentationConfig

SEG = dict(image_size=64, fpn_channels=32, head_channels=32)


@pytest.mark.parametrize("head", ["semantic_fpn", "deeplabv3plus"])
def test_model_keeps_backbone_names_and_checkpoints_every_weight(head, tmp_path):
    seg = SegmentationConfig(head=head, **SEG)
    model = build_segmenter(ModelConfig(name="resnet10"), seg, num_classes=5)
    logits = model(tf.zeros([2, 64, 64, 3]))
    assert logits.shape == (2, 16, 16, 5) and logits.dtype == tf.float32
    classifier = build_classifier(ModelConfig(name="resnet10"), 5)
    stages = layers_by_stage(model)
    backbone = {
        la.name for s in ("stem", "stage1", "stage2", "stage3", "stage4") for la in stages[s]
    }
    assert backbone == {la.name for la in classifier.layers if not la.name.startswith("head_")}
    assert stages["fpn"] and stages["head"]
    # Every variable round-trips through tf.train.Checkpoint (the runs' format).
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    other = build_segmenter(ModelConfig(name="resnet10"), seg, num_classes=5)
    tf.train.Checkpoint(model=other).read(path).assert_existing_objects_matched()
    for a, b in zip(model.variables, other.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_logits_stay_float32_under_bfloat16():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_segmenter(ModelConfig(name="resnet10"), SegmentationConfig(**SEG), 3)
        assert model(tf.zeros([1, 64, 64, 3])).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_ignored_pixels_do_not_count():
    logits = tf.random.stateless_normal([2, 4, 4, 3], [1, 2])
    labels = np.random.default_rng(0).integers(0, 3, (2, 16, 16)).astype(np.uint8)
    ignored = labels.copy()
    ignored[0, :8] = 255
    total, count = pixel_loss_terms(logits, tf.constant(labels))
    part, part_count = pixel_loss_terms(logits, tf.constant(ignored))
    assert float(count) == 2 * 256 and float(part_count) == 2 * 256 - 128
    # The reference: softmax CE of the bilinearly upsampled logits at each valid pixel.
    up = tf.image.resize(logits, [16, 16]).numpy()
    logp = up - np.log(np.exp(up).sum(-1, keepdims=True))
    per = -np.take_along_axis(logp, labels[..., None].astype(int), -1)[..., 0]
    assert float(total) == pytest.approx(per.sum(), rel=1e-4)
    assert float(part) == pytest.approx(per[ignored != 255].sum(), rel=1e-4)


def test_class_map_at_original_size_follows_the_logits():
    # Logits of a 32 px input whose left half says class 1, right half class 2; a 20 x 40 image
    # fills the top 16 rows of the input.
    logits = np.zeros([8, 8, 3], np.float32)
    logits[:, :4, 1] = 5.0
    logits[:, 4:, 2] = 5.0
    classes, score = class_map_at_original(tf.constant(logits), tf.constant([20, 40]), 32)
    classes = classes.numpy()
    assert classes.shape == (20, 40) and score.shape == (20, 40)
    assert (classes[:, :19] == 1).all() and (classes[:, 21:] == 2).all()


def test_confusion_accumulator_metrics():
    acc = ConfusionAccumulator(["bg", "a", "b"])
    labels = np.array([[[0, 0, 1, 1], [2, 2, 255, 255]]], np.uint8)
    preds = np.array([[[0, 1, 1, 1], [2, 0, 2, 0]]], np.uint8)
    acc.update(labels, preds)
    out = acc.result()
    # bg: TP 1, FP 1 (a 2 predicted bg), FN 1 -> 1/3; a: TP 2, FP 1 -> 2/3; b: TP 1, FN 1 -> 1/2.
    assert out["per_class_iou"] == pytest.approx({"bg": 1 / 3, "a": 2 / 3, "b": 1 / 2})
    assert out["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert out["pixel_accuracy"] == pytest.approx(4 / 6) and out["num_pixels"] == 6
    absent = ConfusionAccumulator(["bg", "a", "b"])
    absent.update(np.zeros((1, 2, 2), np.uint8), np.zeros((1, 2, 2), np.uint8))
    assert absent.result()["per_class_iou"] == {"bg": 1.0, "a": None, "b": None}
    assert absent.result()["mIoU"] == 1.0


def test_replica_shares_sum_to_the_global_batch_loss():
    out = run_on_two_cpus(
        r"""
from transfer_tf.segmentation.model import build_segmenter
from transfer_tf.segmentation.objective import Segmentation
from transfer_tf.segmentation.settings import SegmentationConfig

seg = SegmentationConfig(image_size=64, fpn_channels=32, head_channels=32)
images = tf.cast(tf.random.stateless_uniform([4, 64, 64, 3], [1, 2], 0, 255), tf.uint8)
labels = np.random.default_rng(0).integers(0, 3, (4, 64, 64)).astype(np.uint8)
labels[0, :40] = 255  # the first replica's crops are mostly ignored, the second's are not
labels[1] = 255
labels = tf.constant(labels)
strategy = make_strategy("mirrored")
with strategy.scope():
    model = build_segmenter(ModelConfig(name="resnet10"), seg, num_classes=3)
for layer in model.layers:  # BN in inference mode: per-replica batch statistics would differ
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
objective = Segmentation(model)
single, single_metrics = objective.replica_loss((images, labels))
dataset = tf.data.Dataset.from_tensors((images, labels))
batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
shares, metrics = strategy.run(objective.replica_loss, args=(batch,))
total = strategy.reduce("SUM", shares, axis=None)
valid = strategy.reduce("MEAN", metrics["valid_pixels"], axis=None)
first = strategy.experimental_local_results(shares)[0]

# The eval pass under the same strategy: dict inputs split over replicas, class maps gathered.
from transfer_tf.segmentation.evaluation import ConfusionAccumulator
from transfer_tf.segmentation.model import Segmenter
from transfer_tf.training.evaluation import evaluate_model

seg_eval = SegmentationConfig(image_size=64, fpn_channels=32, head_channels=32, max_eval_size=80)
hw = tf.constant([[60, 40], [64, 64], [30, 50], [64, 10]], tf.int32)
eval_labels = tf.fill([4, 80, 80], 255)
eval_labels = tf.tensor_scatter_nd_update(
    eval_labels, [[0, 0, 0], [2, 29, 49]], [1, 2])  # two valid pixels
def eval_fn(ctx):
    inputs = {"images": images, "image_hw": hw}
    return tf.data.Dataset.from_tensor_slices((inputs, eval_labels)).batch(2)
metrics = evaluate_model(Segmenter(model, seg_eval), strategy, eval_fn,
                         ConfusionAccumulator(["a", "b", "c"]))
print(json.dumps({"single": float(single), "mirrored": float(total), "first": float(first),
                  "valid": float(single_metrics["valid_pixels"]), "mirrored_valid": float(valid),
                  "eval_images": metrics["num_images"], "eval_pixels": metrics["num_pixels"]}))
"""
    )
    assert out["eval_images"] == 4 and out["eval_pixels"] == 2
    assert out["valid"] == 4 * 64 * 64 - 64 * 64 - 40 * 64 == out["mirrored_valid"]
    assert abs(out["mirrored"] - out["single"]) < 1e-4 * abs(out["single"])
    assert 0 < out["first"] < out["mirrored"]
