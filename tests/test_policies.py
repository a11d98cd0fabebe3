"""RandAugment / AutoAugment-style policies (keras-cv) inside the real input pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from test_input_data import write_classification_shards

from transfer_tf.config import DataConfig
from transfer_tf.data.input import build_dataset

SIZE = 32


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory) -> DataConfig:
    directory = str(tmp_path_factory.mktemp("policy_shards"))
    write_classification_shards(directory, num_shards=2, per_shard=4)
    pattern = f"{directory}/train-*"
    return DataConfig(
        train_pattern=pattern,
        eval_pattern=pattern,
        num_classes=5,
        image_size=SIZE,
        shuffle_buffer=4,
        randaugment_magnitude=0.9,
    )


def _first_batch(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    ds = build_dataset(cfg, split="train", global_batch_size=8, seed=3, deterministic=True)
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


@pytest.mark.parametrize("policy", ["randaugment", "autoaugment"])
def test_policy_changes_pixels_and_keeps_the_batch_contract(base_cfg, policy):
    plain_images, plain_labels = _first_batch(base_cfg)
    cfg = dataclasses.replace(base_cfg, augment_policy=policy)
    images, labels = _first_batch(cfg)
    assert images.dtype == np.uint8 and images.shape == (8, SIZE, SIZE, 3)
    # Policies touch pixels only: same crops underneath, same labels, most images changed.
    np.testing.assert_array_equal(labels, plain_labels)
    changed = [not np.array_equal(a, b) for a, b in zip(images, plain_images, strict=True)]
    assert sum(changed) >= 4
    # keras-cv applies ops per image in a concurrent map_fn: outputs are not bit-reproducible
    # (policies.py), but every run draws fresh, valid augmentations.


def test_eval_ignores_the_policy(base_cfg):
    cfg = dataclasses.replace(base_cfg, augment_policy="randaugment")
    plain = next(iter(build_dataset(base_cfg, split="eval", global_batch_size=8)))[0].numpy()
    policy = next(iter(build_dataset(cfg, split="eval", global_batch_size=8)))[0].numpy()
    np.testing.assert_array_equal(plain, policy)
    assert tf.reduce_max(policy) > tf.reduce_min(policy)
