"""The shipped COCO recipe's probe phase on a backbone whose BN moving statistics do not match the
target's activations (issue 29: pretrained at 64 px, fine-tuned at 128 px, the source statistics
made the pooled features ~9x larger and the probe diverged). The recipe normalises the frozen
backbone with the target's batch statistics during the probe (`frozen_batchnorm: train`), so the
head trains on features of the usual scale instead of overshooting."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from transfer_tf.config import load_config
from transfer_tf.models.resnet import build_classifier
from transfer_tf.transfer.finetune import run_finetuning

COCO_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "configs", "coco_multilabel_resnet50.yaml"
)
CLASSES, BATCH, SIZE = 4, 8, 32


def _batches(seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(32, SIZE, SIZE, 3), dtype=np.uint8)
    labels = (rng.random((32, CLASSES)) < 0.4).astype(np.float32)
    return images, labels


def _dataset_fn(ctx):
    ds = tf.data.Dataset.from_tensor_slices(_batches(0)).repeat()
    return ds.batch(ctx.get_per_replica_batch_size(BATCH), drop_remainder=True)


def _loss(model) -> float:
    images, labels = _batches(1)
    logits = model(images, training=False)
    return float(keras.losses.binary_crossentropy(labels, logits, from_logits=True).numpy().mean())


def test_the_probe_trains_on_target_batch_statistics_when_the_source_ones_do_not_fit(tmp_path):
    keras.utils.set_random_seed(0)
    source = build_classifier(load_config(COCO_CONFIG, ["model.name=resnet10"]).model, 3)
    # The source's last-stage statistics from another input distribution: activations there
    # ~10x what the moving variances expect, as a 64 px backbone's are at 128 px.
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name.startswith("conv5"):
            layer.moving_variance.assign(layer.moving_variance * 1e-2)
    weights = str(tmp_path / "source.weights.h5")
    source.save_weights(weights)

    label_map = tmp_path / "label_map.json"
    label_map.write_text(json.dumps([{"id": i + 1, "name": f"c{i}"} for i in range(CLASSES)]))
    cfg = load_config(
        COCO_CONFIG,
        [
            f"data.label_map_file={label_map}",
            "data.train_pattern=",
            "data.eval_pattern=",
            "model.name=resnet10",
            f"data.num_classes={CLASSES}",
            f"data.image_size={SIZE}",
            "data.num_train_examples=32",
            f"train.global_batch_size={BATCH}",
            "train.strategy=one_device",
            "train.mixed_precision=none",
            "train.xla=false",
            "transfer.phases.1.epochs=1",
        ],
    )
    probe_phase = cfg.transfer.phases[0]
    assert probe_phase.trainable == "head" and probe_phase.frozen_batchnorm == "train"
    losses = {}

    def on_phase_end(phase, model):
        if phase.name == "probe":
            losses["after_probe"] = _loss(model)

    run_finetuning(
        cfg,
        str(tmp_path / "run"),
        init_checkpoint=weights,
        train_dataset_fn=_dataset_fn,
        eval_input_fn=lambda ctx: _dataset_fn(ctx).take(1),
        on_phase_end=on_phase_end,
    )
    # With the source's statistics (`frozen_batchnorm: inference`) the probe's 8 steps at the
    # recipe's LR overshoot on the ~10x features: 4.27 here; with batch statistics 0.87 (a
    # prior-initialised head starts near 0.67; the moving averages still lag after 8 steps).
    assert np.isfinite(losses["after_probe"])
    assert losses["after_probe"] < 2.0, losses
