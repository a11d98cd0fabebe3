"""Train/eval preprocessing: crop windows, scaled JPEG decode, flips, determinism, MixUp/CutMix."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from test_input_data import encode, random_image

from transfer_tf.data import augment, mixing


def test_random_crop_windows_stay_inside_and_follow_the_ranges():
    shape = tf.constant([90, 160], tf.int32)
    fallback = augment.center_crop_window(90, 160, 0.875).numpy()
    for k in range(60):
        y, x, h, w = augment.sample_crop_window(shape, tf.constant([k, 3])).numpy()
        assert 0 <= y and 0 <= x and y + h <= 90 and x + w <= 160 and h > 0 and w > 0
        if not np.array_equal([y, x, h, w], fallback):
            # Integer rounding of small crops makes the bounds approximate.
            assert 0.07 <= h * w / (90 * 160) <= 1.0
            assert 0.7 <= w / h <= 1.4


def test_scaled_jpeg_decode_matches_the_full_decode_within_jpeg_noise():
    pixels = random_image(np.random.default_rng(0), 480, 640)
    data = tf.constant(encode(pixels))
    window = tf.constant([40, 80, 400, 480])
    full = augment.decode_jpeg_window(data, window, min_size=0)
    scaled = augment.decode_jpeg_window(data, window, min_size=100)  # 1/4 scale: 100x120
    assert full.shape == (400, 480, 3) and scaled.shape == (100, 120, 3)
    a = augment.resize_to_uint8(full, 64).numpy().astype(int)
    b = augment.resize_to_uint8(scaled, 64).numpy().astype(int)
    assert np.abs(a - b).mean() < 3.0


def test_fused_crop_resize_flip_equals_the_unfused_steps():
    data = tf.constant(encode(random_image(np.random.default_rng(2), 480, 640)))
    # Full-scale and 1/2-scale windows (short side < and >= 2x the output), each with and
    # without the flip: one switch_case must give what decode -> resize -> reverse gives.
    for window in ([10, 20, 100, 90], [40, 80, 400, 480]):
        window = tf.constant(window)
        plain = augment.resize_to_uint8(augment.decode_jpeg_window(data, window, 96), 96).numpy()
        for flip in (False, True):
            fused = augment.resized_jpeg_crop(data, window, 96, flip=tf.constant(flip)).numpy()
            np.testing.assert_array_equal(fused, plain[:, ::-1] if flip else plain)


def test_resize_to_uint8_rounds_like_a_uint8_bilinear_resize():
    image = tf.constant(random_image(np.random.default_rng(3), 37, 53))
    reference = tf.image.resize(image, [24, 24], method="bilinear").numpy()  # uint8 input
    np.testing.assert_array_equal(
        augment.resize_to_uint8(image, 24).numpy(), np.floor(reference + 0.5).astype(np.uint8)
    )


def test_train_preprocessing_is_seeded_and_eval_is_deterministic():
    data = tf.constant(encode(random_image(np.random.default_rng(1), 60, 80)))
    a = augment.preprocess_for_train(data, 32, tf.constant([1, 2]))
    b = augment.preprocess_for_train(data, 32, tf.constant([1, 2]))
    c = augment.preprocess_for_train(data, 32, tf.constant([1, 3]))
    assert a.dtype == tf.uint8 and a.shape == (32, 32, 3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    # Skipping the format check changes nothing for a JPEG.
    only = augment.preprocess_for_train(data, 32, tf.constant([1, 2]), jpeg_only=True)
    np.testing.assert_array_equal(a.numpy(), only.numpy())
    e1 = augment.preprocess_for_eval(data, 32)
    np.testing.assert_array_equal(e1.numpy(), augment.preprocess_for_eval(data, 32).numpy())


def test_flip_mirrors_exactly_half_the_time_on_average():
    # Same seed, same crop: with the flip on, the output is that crop or exactly its mirror.
    data = tf.constant(encode(random_image(np.random.default_rng(4), 60, 80)))
    flips = []
    for s in range(40):
        seed = tf.constant([s, 0])
        plain = augment.preprocess_for_train(data, 16, seed, flip=False).numpy()
        out = augment.preprocess_for_train(data, 16, seed, flip=True).numpy()
        assert not np.array_equal(plain, plain[:, ::-1])
        flips.append(not np.array_equal(out, plain))
        if flips[-1]:
            np.testing.assert_array_equal(out, plain[:, ::-1])
    assert 8 < sum(flips) < 32


def test_mixup_and_cutmix_mix_labels_by_pixel_share():
    images = tf.concat(
        [tf.zeros([1, 8, 8, 3], tf.uint8), tf.fill([1, 8, 8, 3], tf.constant(255, tf.uint8))], 0
    )
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    for fn in (mixing.mixup, mixing.cutmix):
        out, soft = fn(images, labels, tf.constant([5, 6]), 1.0)
        assert out.dtype == tf.uint8
        # The share of the partner's pixels equals the partner's label weight.
        share = out.numpy()[0].astype(float).mean() / 255.0
        np.testing.assert_allclose(share, soft.numpy()[0, 1], atol=0.01)
        np.testing.assert_allclose(soft.numpy().sum(axis=1), 1.0, rtol=1e-6)
