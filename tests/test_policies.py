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


@pytest.fixture(scope="module")
def solid_cfg(tmp_path_factory) -> DataConfig:
    """8 records, each one flat colour (distinct), label = record number."""
    from test_input_data import encode

    from transfer_tf.data import schemas

    directory = str(tmp_path_factory.mktemp("solid_shards"))
    path = f"{directory}/train-00000-of-00001"
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(8):
            pixels = np.full(
                [48, 40, 3], [30 * i + 10, 200 - 20 * i, 60 + (97 * i) % 140], np.uint8
            )
            ex = schemas.classification_example(encode(pixels), i, f"c{i}", 48, 40, f"{i}.jpg")
            writer.write(ex.SerializeToString())
    return DataConfig(
        train_pattern=path,
        num_classes=8,
        label_offset=0,
        image_size=SIZE,
        shuffle_buffer=8,
        cutmix_alpha=1.0,
        randaugment_magnitude=1.0,
        randaugment_layers=3,
    )


def test_policy_runs_before_cutmix_so_labels_match_the_patch_area(solid_cfg, monkeypatch):
    # A geometric policy: every image rotated by 30-70 degrees (reflected borders). Each image
    # is flat before mixing and a rotated flat image is flat, so after CutMix image 0 of a pair
    # holds exactly two colours: its own outside the box and its partner's inside, and the
    # partner's label weight must be the box's area fraction. A policy run after mixing rotates
    # the box (and blends its edges), so the pixels no longer match the label. (The shipped
    # policies can break flatness themselves: AutoContrast stretches the float residue that a
    # shear leaves on a flat image, so a pure rotation stands in for them.)
    import keras_cv

    from transfer_tf.data import policies

    rotate = keras_cv.layers.RandomRotation(factor=(30 / 360, 70 / 360), seed=0)

    def geometric(cfg, seed):
        return lambda image: tf.cast(
            tf.clip_by_value(tf.round(rotate(tf.cast(image, tf.float32))), 0, 255), tf.uint8
        )

    monkeypatch.setattr(policies, "make_policy", geometric)
    cfg = dataclasses.replace(solid_cfg, augment_policy="autoaugment")
    ds = build_dataset(cfg, split="train", global_batch_size=2, seed=1)
    checked = 0
    for images, labels in ds.take(8):
        images, labels = images.numpy().astype(int), labels.numpy()
        own, partner = np.argmax(labels[0]), np.argmax(labels[1])
        weight = labels[0][partner]
        if weight in (0.0, 1.0):
            continue  # an empty or full box: nothing to locate
        corner = np.all(np.abs(images[0] - images[0][0, 0]) <= 2, axis=-1).mean()
        assert min(abs(weight - corner), abs(weight - (1 - corner))) < 1e-6, (weight, corner)
        assert labels[0][own] == pytest.approx(1 - weight)
        checked += 1
    assert checked >= 4


def test_a_deterministic_run_can_apply_a_policy(base_cfg, monkeypatch):
    # keras-cv's policy layers take TF's global generator, which TF refuses to create once op
    # determinism is on: `deterministic: true` with a policy used to die building the dataset.
    # As in a fresh process: no global generator yet (earlier tests on this worker made one).
    from tensorflow.python.framework import config as tf_config
    from tensorflow.python.ops import stateful_random_ops

    from transfer_tf.config import load_config
    from transfer_tf.training.run_setup import setup_runtime

    cfg = load_config(
        None,
        ["deterministic=true", "train.xla=false", "train.mixed_precision=none"],
    )
    monkeypatch.setattr(stateful_random_ops, "global_generator", None)
    setup_runtime(cfg)

    assert tf_config.is_op_determinism_enabled()
    for policy in ("randaugment", "autoaugment"):
        images, labels = _first_batch(dataclasses.replace(base_cfg, augment_policy=policy))
        assert images.shape == (8, SIZE, SIZE, 3) and labels.shape[0] == 8
