"""The detection objective under MirroredStrategy: the replicas' loss shares sum to the
one-device loss of the same global batch (focal + box loss normalised by ALL positive anchors)."""

from two_replicas import run_on_two_cpus


def test_replica_shares_sum_to_the_global_batch_loss():
    out = run_on_two_cpus(
        r"""
from transfer_tf.config import DetectionConfig
from transfer_tf.detection.objective import Detection
from transfer_tf.detection.retinanet import build_retinanet

det = DetectionConfig(image_size=128, head_convs=1, max_boxes=2)
images = tf.cast(tf.random.stateless_uniform([4, 128, 128, 3], [1, 2], 0, 255), tf.uint8)
# Images with 2, 1, 0 and 1 objects: the replicas see different numbers of positives.
boxes = tf.constant([[[10, 10, 60, 70], [64, 64, 120, 100]], [[20, 30, 100, 110], [-1] * 4],
                     [[-1] * 4, [-1] * 4], [[5, 50, 40, 120], [-1] * 4]], tf.float32)
classes = tf.constant([[0, 2], [1, -1], [-1, -1], [2, -1]], tf.float32)
strategy = make_strategy("mirrored")
with strategy.scope():
    model = build_retinanet(ModelConfig(name="resnet18"), det, num_classes=3)
for layer in model.layers:  # BN in inference mode: per-replica batch statistics would differ
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
objective = Detection(model, det)
single, single_metrics = objective.replica_loss((images, {"boxes": boxes, "classes": classes}))
dataset = tf.data.Dataset.from_tensors((images, {"boxes": boxes, "classes": classes}))
batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
shares, metrics = strategy.run(objective.replica_loss, args=(batch,))
total = strategy.reduce("SUM", shares, axis=None)
positives = strategy.reduce("MEAN", metrics["num_positives"], axis=None)
print(json.dumps({"single": float(single), "mirrored": float(total),
                  "positives": float(single_metrics["num_positives"]),
                  "mirrored_positives": float(positives)}))
"""
    )
    assert out["positives"] > 0 and out["mirrored_positives"] == out["positives"]
    assert abs(out["mirrored"] - out["single"]) < 1e-3 * abs(out["single"])
