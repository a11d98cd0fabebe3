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


# -- rotation and colour jitter ---------------------------------------------------------------


def test_rotation_turns_the_image_counterclockwise_about_its_centre():
    from transfer_tf.data import distort

    image = random_image(np.random.default_rng(5), 24, 24)
    turned = distort.rotate(tf.constant(image), tf.constant(np.pi / 2)).numpy()
    assert turned.dtype == np.uint8 and turned.shape == image.shape
    assert np.abs(turned.astype(int) - np.rot90(image).astype(int)).max() <= 1
    # A random rotation draws its angle from the seed: same seed, same image; angles vary.
    a, b, c = (
        distort.random_rotation(tf.constant(image), tf.constant(s), 30.0).numpy()
        for s in ([1, 2], [1, 2], [1, 3])
    )
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, image)


def test_color_jitter_changes_colour_not_geometry():
    from transfer_tf.data import distort

    rng = np.random.default_rng(6)
    colourful = tf.constant(random_image(rng, 16, 16))
    gray = tf.constant(np.repeat(random_image(rng, 16, 16)[..., :1], 3, axis=-1))
    changes = []
    for s in range(4):
        seed = tf.constant([s, 9])
        # Saturation and hue leave gray pixels gray and unchanged.
        same = distort.color_jitter(gray, seed, saturation=0.8, hue=0.4).numpy()
        assert same.dtype == np.uint8 and same.shape == (16, 16, 3)
        assert np.abs(same.astype(int) - gray.numpy().astype(int)).max() <= 1
        # A hue turn keeps each pixel's max and min channel values (HSV value and chroma).
        turned = distort.color_jitter(colourful, seed, hue=0.5).numpy().astype(int)
        rgb = colourful.numpy().astype(int)
        assert np.abs(turned.max(-1) - rgb.max(-1)).max() <= 1
        assert np.abs(turned.min(-1) - rgb.min(-1)).max() <= 1
        changes.append(np.abs(turned - rgb).max())
    assert min(changes) > 0 and max(changes) > 30  # turns of different sizes per seed
    # Brightness scales every pixel by one factor in [1 - b, 1 + b], drawn per seed.
    factors = []
    for s in range(4):
        scaled = distort.color_jitter(colourful, tf.constant([s, 1]), brightness=0.3).numpy()
        ratio = scaled.astype(float) / np.maximum(colourful.numpy().astype(float), 1)
        keep = (colourful.numpy() > 60) & (scaled < 255)
        assert 0.7 - 0.02 <= ratio[keep].min() and ratio[keep].max() <= 1.3 + 0.02
        assert ratio[keep].std() < 0.01
        factors.append(ratio[keep].mean())
    assert max(factors) - min(factors) > 0.05
    # Contrast stretches about the mean gray level, which stays put (no clipping here).
    mid = tf.constant(np.clip(random_image(rng, 16, 16) // 2 + 64, 0, 255).astype(np.uint8))
    gray_mean = tf.reduce_mean(tf.image.rgb_to_grayscale(tf.cast(mid, tf.float32))).numpy()
    stretched = distort.color_jitter(mid, tf.constant([2, 1]), contrast=0.5)
    assert not np.array_equal(stretched.numpy(), mid.numpy())
    stretched_mean = tf.reduce_mean(tf.image.rgb_to_grayscale(tf.cast(stretched, tf.float32)))
    assert abs(stretched_mean.numpy() - gray_mean) < 1.0
    # All off: the identity.
    off = distort.color_jitter(colourful, tf.constant([0, 1])).numpy()
    np.testing.assert_array_equal(off, colourful.numpy())


def test_rotation_and_colour_are_seeded_per_image_and_leave_the_crop_alone():
    data = tf.constant(encode(random_image(np.random.default_rng(7), 60, 80)))
    jitter = (0.4, 0.4, 0.4, 0.1)
    for s in range(6):
        seed = tf.constant([s, 2])
        plain = augment.preprocess_for_train(data, 32, seed).numpy().astype(int)
        # A vanishing rotation: the same crop and flip as without it.
        tiny = augment.preprocess_for_train(data, 32, seed, rotation_degrees=1e-4).numpy()
        assert np.abs(tiny.astype(int) - plain).max() <= 1
        # Brightness alone: the same crop, scaled by one factor.
        bright = augment.preprocess_for_train(data, 32, seed, color_jitter=(0.5, 0, 0, 0))
        bright = bright.numpy().astype(float)
        keep = (plain > 60) & (bright < 255)
        assert (bright[keep] / plain[keep]).std() < 0.02
    both = [
        augment.preprocess_for_train(
            data, 32, tf.constant(s), rotation_degrees=20.0, color_jitter=jitter
        ).numpy()
        for s in ([1, 2], [1, 2], [1, 3])
    ]
    assert both[0].dtype == np.uint8 and both[0].shape == (32, 32, 3)
    np.testing.assert_array_equal(both[0], both[1])
    assert not np.array_equal(both[0], both[2])


def test_rotation_and_colour_config_keys_reach_the_parsers():
    import pytest

    from transfer_tf.config import ConfigError, config_from_dict
    from transfer_tf.data.parsers import Parser

    cfg = config_from_dict(
        {"data": {"random_rotation_degrees": 15, "color_jitter": [0.4, 0.4, 0.4, 0.1]}}
    )
    assert cfg.data.random_rotation_degrees == 15.0
    assert cfg.data.color_jitter == (0.4, 0.4, 0.4, 0.1)
    for bad, key in (
        ({"random_rotation_degrees": -1}, "data.random_rotation_degrees"),
        ({"random_rotation_degrees": 181}, "data.random_rotation_degrees"),
        ({"color_jitter": [0.4, -0.1, 0, 0]}, "data.color_jitter"),
        ({"color_jitter": [0, 0, 0, 0.6]}, "data.color_jitter"),
    ):
        with pytest.raises(ConfigError, match=key):
            config_from_dict({"data": bad})
    data = tf.constant(encode(random_image(np.random.default_rng(8), 60, 80)))
    seed = tf.constant([3, 4], tf.int64)
    single = {"image": data, "label": tf.constant(1, tf.int64)}
    coco = {
        "image": data,
        "boxes": tf.constant([[0.0, 0.0, 1.0, 1.0]]),
        "classes": tf.constant([0], tf.int64),
    }
    for tensors in (single, coco):
        schema = "coco" if "boxes" in tensors else "classification"
        base = dict(image_size=32, num_classes=3, schema=schema)
        off = Parser(type(cfg.data)(**base), training=True)(tensors, seed)[0].numpy()
        on = Parser(
            type(cfg.data)(**base, random_rotation_degrees=30.0, color_jitter=(0.4, 0.4, 0.4, 0.1)),
            training=True,
        )(tensors, seed)[0].numpy()
        assert on.shape == off.shape == (32, 32, 3) and not np.array_equal(on, off)
