"""TFDS as a source, offline, through `tfds.testing.mock_data` (same parsers as the shards)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from test_input_data import encode, random_image

from transfer_tf.config import DataConfig
from transfer_tf.data.input import build_dataset


def test_imagenet2012_mock_data_trains_and_evaluates():
    cfg = DataConfig(
        train_pattern="tfds:imagenet2012",
        eval_pattern="tfds:imagenet2012",
        num_classes=1000,
        image_size=32,
        shuffle_buffer=4,
    )
    with tfds.testing.mock_data(num_examples=6):
        images, labels = next(iter(build_dataset(cfg, split="train", global_batch_size=4)))
        assert images.dtype == tf.uint8 and images.shape == (4, 32, 32, 3)
        np.testing.assert_array_equal(labels.numpy().sum(axis=1), np.ones(4))
        evaluated = [y for _, y in build_dataset(cfg, split="eval", global_batch_size=4)]
        assert sum(int(y.shape[0]) for y in evaluated) == 6


def test_coco_2017_objects_become_multi_hot_labels():
    rng = np.random.default_rng(0)
    examples = {
        "image": [encode(random_image(rng, 40, 48)), encode(random_image(rng, 44, 36))],
        "objects": {
            "bbox": tf.ragged.constant(
                [[[0.0, 0.0, 1.0, 1.0]] * 2, [[0.1, 0.1, 0.9, 0.9]]], ragged_rank=1
            ),
            "label": tf.ragged.constant([[2, 79], [5]], dtype=tf.int64),
            "is_crowd": tf.ragged.constant([[False, True], [False]]),
        },
    }

    def as_dataset(self, split, read_config=None, **kwargs):
        ds = tf.data.Dataset.from_tensor_slices(examples)
        return ds.map(
            lambda e: {
                "image": e["image"],
                "objects": {k: v for k, v in e["objects"].items()},
                "tfds_id": tf.constant("coco-validation.tfrecord-00000-of-00001__0"),
            }
        )

    cfg = DataConfig(eval_pattern="tfds:coco/2017", num_classes=80, image_size=32)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        _, labels = next(iter(build_dataset(cfg, split="eval", global_batch_size=2)))
    expected = np.zeros([2, 80], np.float32)
    expected[0, [2, 79]] = 1.0
    expected[1, 5] = 1.0
    np.testing.assert_array_equal(labels.numpy(), expected)
