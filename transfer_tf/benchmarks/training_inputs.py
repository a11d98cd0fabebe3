"""The inputs of `pipelines/benchmark_training.py`: one in-memory synthetic batch, repeated, or
generated JPEG records through the real input pipeline (`data.input.build_dataset`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np


def synthetic_batches(batch: int, size: int, classes: int) -> Any:
    """One random uint8 batch and one-hot labels, repeated forever."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, [batch, size, size, 3]).astype("uint8")
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)]
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def tfrecord_batches(
    work_dir: str, size: int, batch_size: int, num_classes: int
) -> Callable[[Any], Any]:
    """Writes 256 JPEG records (1.5x the model size) and returns a dataset_fn over them."""
    import tensorflow as tf

    from transfer_tf.config import DataConfig
    from transfer_tf.data.input import build_dataset
    from transfer_tf.data.schemas import classification_example

    side = int(size * 1.5)
    rng = np.random.default_rng(0)
    folder = os.path.join(work_dir, str(size))
    os.makedirs(folder, exist_ok=True)
    for s in range(4):
        with tf.io.TFRecordWriter(os.path.join(folder, f"train-{s:05d}-of-00004")) as w:
            for i in range(64):
                img = rng.integers(0, 255, [side, side, 3]).astype("uint8")
                jpeg = tf.io.encode_jpeg(img, quality=90).numpy()
                label = int(rng.integers(0, num_classes))
                w.write(
                    classification_example(
                        jpeg, label + 1, "c", side, side, f"{i}.jpg"
                    ).SerializeToString()
                )
    data_cfg = DataConfig(
        train_pattern=os.path.join(folder, "train-*"),
        num_classes=num_classes,
        image_size=size,
        shuffle_buffer=256,
    )
    return lambda ctx: build_dataset(
        data_cfg, split="train", global_batch_size=batch_size, input_context=ctx
    )
