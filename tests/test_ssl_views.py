"""Two-view augmentation: deterministic per seed, distinct views, uint8 and shape kept, the
decoded and the bytes paths agree, and each random op fires about as often as configured."""

import dataclasses
import functools

import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.ssl import views

SIZE = 32


def _image(height: int = 48, width: int = 40) -> np.ndarray:
    # Colourful and varied (a gradient plus noise): every op changes it visibly.
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([y * 255 / height, x * 255 / width, (x + y) * 127 / (height + width)], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype("uint8")


IMAGE = _image()


def _many(cfg, n: int, image=IMAGE):
    """Both views for seeds [0, 0..n) in one graph (tf.data), as uint8 [n, S, S, 3] arrays."""
    ds = tf.data.Dataset.range(n).map(
        lambda i: views.two_views(tf.constant(image), tf.stack([tf.constant(0, tf.int64), i]), cfg)
    )
    v1, v2 = next(iter(ds.batch(n)))
    return v1.numpy(), v2.numpy()


@functools.cache
def _full_recipe() -> tuple[np.ndarray, np.ndarray]:
    return _many(views.ViewConfig(image_size=SIZE), 64)


def test_views_are_deterministic_distinct_uint8():
    v1, v2 = _full_recipe()  # seeds [0, i] for i < 64, in a tf.data map
    assert v1.dtype == np.uint8 and v1.shape == (64, SIZE, SIZE, 3) and v2.shape == v1.shape
    # Same seed, same views: eagerly, in int32 or int64, as in the graph.
    cfg = views.ViewConfig(image_size=SIZE)
    for seed in (tf.constant([0, 5], tf.int64), tf.constant([0, 5], tf.int32)):
        e1, e2 = views.two_views(tf.constant(IMAGE), seed, cfg)
        assert e1.dtype == tf.uint8 and e1.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(e1, v1[5])
        np.testing.assert_array_equal(e2, v2[5])
    # All 128 views distinct: the two views of an image differ, and so do seeds.
    flat = np.concatenate([v1, v2]).reshape(128, -1)
    assert len({row.tobytes() for row in flat}) == 128


def test_bytes_paths_match_the_decoded_path():
    cfg = views.byol_views(SIZE)
    seed = tf.constant([11, 12], tf.int64)
    png = tf.io.encode_png(IMAGE)
    expected = views.two_views(tf.constant(IMAGE), seed, cfg)
    once = views.two_views_from_bytes(png, seed, cfg, decode_once=True)
    # PNG through the pipeline's crop (decode whole, same window and flip draws): same pixels.
    fused = views.two_views_from_bytes(png, seed, cfg)
    for e, o, f in zip(expected, once, fused, strict=True):
        np.testing.assert_array_equal(e, o)
        np.testing.assert_array_equal(e, f)
    jpeg = views.two_views_from_bytes(tf.io.encode_jpeg(IMAGE, quality=95), seed, cfg)
    for v in jpeg:
        assert v.dtype == tf.uint8 and v.shape == (SIZE, SIZE, 3)
    again = views.two_views_from_bytes(tf.io.encode_jpeg(IMAGE, quality=95), seed, cfg)
    np.testing.assert_array_equal(jpeg[0], again[0])


# Only the op under test is on; the crop is the whole (square) image, so an untouched view is
# exactly the resized image and "the op fired" is "the view differs from it".
QUIET = views.ViewConfig(
    image_size=SIZE,
    area_range=(1.0, 1.0),
    aspect_range=(1.0, 1.0),
    flip=False,
    jitter=(0.0, 0.0, 0.0, 0.0),
    grayscale_prob=0.0,
    blur_prob=(0.0, 0.0),
    solarize_prob=(0.0, 0.0),
)
SQUARE = _image(40, 40)
N = 300  # binomial sd at p = 0.2: 0.023; the bounds below are >= 3.5 sd wide


def _fired(cfg) -> tuple[float, float]:
    plain = views.crop_view(tf.constant(SQUARE), tf.constant([0, 0]), QUIET).numpy()
    v1, v2 = _many(cfg, N, SQUARE)
    return tuple(float(np.mean(np.any(v != plain, axis=(1, 2, 3)))) for v in (v1, v2))


def test_grayscale_probability():
    cfg = dataclasses.replace(QUIET, grayscale_prob=0.2)
    v1, v2 = _many(cfg, N, SQUARE)
    for v in (v1, v2):
        gray = np.all(v[..., :1] == v, axis=(1, 2, 3))
        assert 0.12 < gray.mean() < 0.28, gray.mean()


@pytest.mark.parametrize("random_order", [True, False])
def test_jitter_probability(random_order):
    cfg = dataclasses.replace(
        QUIET, jitter=(0.8, 0.8, 0.8, 0.2), jitter_prob=0.8, jitter_random_order=random_order
    )
    for rate in _fired(cfg):
        assert 0.72 < rate < 0.88, rate


def test_asymmetric_blur_and_solarize_probabilities():
    # sigma >= 1: a 0.1-pixel Gaussian leaves a 32 px view unchanged (it "fires" invisibly).
    blur = _fired(dataclasses.replace(QUIET, blur_prob=(1.0, 0.1), blur_sigma=(1.0, 2.0)))
    assert blur[0] == 1.0 and 0.04 < blur[1] < 0.17, blur
    solar = _fired(dataclasses.replace(QUIET, solarize_prob=(0.0, 0.2)))
    assert solar[0] == 0.0 and 0.12 < solar[1] < 0.28, solar


def test_blur_solarize_grayscale_ops():
    flat = np.full([16, 16, 3], 77, np.uint8)
    np.testing.assert_array_equal(views.gaussian_blur(flat, tf.constant(1.5), 5), flat)
    blurred = views.gaussian_blur(IMAGE, tf.constant(2.0), 7).numpy()
    assert blurred.dtype == np.uint8 and blurred.shape == IMAGE.shape
    # Smoother: neighbouring pixels closer; the mean level kept (reflected borders, no darkening).
    assert (
        np.abs(np.diff(blurred.astype(float), axis=1)).mean()
        < 0.5 * np.abs(np.diff(IMAGE.astype(float), axis=1)).mean()
    )
    assert abs(blurred.mean() - IMAGE.mean()) < 1.0
    x = np.array([[[0, 127, 128]], [[200, 255, 1]]], np.uint8)
    np.testing.assert_array_equal(views.solarize(x), [[[0, 127, 127]], [[55, 0, 1]]])
    g = views.grayscale(IMAGE).numpy()
    assert np.all(g[..., 0] == g[..., 1]) and np.all(g[..., 1] == g[..., 2])


# A colourful but low-contrast square (channel means ~150 / 125 / 100, +-12): no jitter op below
# reaches 0 or 255, so the ops' own definitions show without clipping.
MUTED = np.clip(
    np.array([150, 125, 100]) + np.random.default_rng(5).normal(0, 6, [40, 40, 3]), 0, 255
).astype("uint8")


def _jittered(cfg, jitter: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(the un-jittered view [S, S, 3], views 1 of 40 seeds [40, S, S, 3]) as float arrays."""
    cfg = dataclasses.replace(cfg, jitter=jitter, jitter_prob=1.0)
    plain = views.crop_view(tf.constant(MUTED), tf.constant([0, 0]), QUIET).numpy()
    v1, _ = _many(cfg, 40, MUTED)
    return plain.astype(float), v1.astype(float)


def test_ssl_views_jitter_with_the_papers_ops():
    simclr = dataclasses.replace(QUIET, jitter_ops="simclr")
    byol = dataclasses.replace(QUIET, jitter_ops="byol")
    # Contrast as tf.image.adjust_contrast (SimCLR's and BYOL's): each channel scaled about its
    # own mean, so channel means stay; torchvision's blend toward the grey mean moves them.
    for cfg in (simclr, byol):
        plain, out = _jittered(cfg, (0.0, 0.8, 0.0, 0.0))
        assert np.abs(out.std(axis=(1, 2)) - plain.std(axis=(0, 1))).max() > 1.0  # it fired
        np.testing.assert_allclose(
            out.mean(axis=(1, 2)), np.tile(plain.mean((0, 1)), (40, 1)), atol=0.6
        )
    # (torchvision's blend, the SSL views' ops before and still data.color_jitter's, moves them.)
    plain, out = _jittered(dataclasses.replace(QUIET, jitter_ops="torchvision"), (0, 0.8, 0, 0))
    assert np.abs(out.mean(axis=(1, 2)) - plain.mean((0, 1))).max() > 3
    # Saturation as tf.image.adjust_saturation (HSV): each pixel's value (its largest channel)
    # stays; the grayscale blend lowers it.
    for cfg in (simclr, byol):
        plain, out = _jittered(cfg, (0.0, 0.0, 0.8, 0.0))
        assert np.abs(out - plain).max() > 5  # it fired
        assert np.abs(out.max(axis=-1) - plain.max(axis=-1)).max() <= 1.0
    # Brightness: BYOL's adds one delta to every pixel, SimCLR's (v2) multiplies by one factor.
    plain, out = _jittered(byol, (0.2, 0.0, 0.0, 0.0))
    shift = out - plain
    assert np.abs(shift).max() > 5 and np.all(shift.max((1, 2, 3)) - shift.min((1, 2, 3)) <= 1)
    plain, out = _jittered(simclr, (0.2, 0.0, 0.0, 0.0))
    ratio = out / plain
    assert np.abs(ratio - 1).max() > 0.05 and np.all(
        ratio.max((1, 2, 3)) - ratio.min((1, 2, 3)) < 0.03
    )


def test_jitter_ops_equal_tf_image_ops():
    from transfer_tf.data import distort

    x = tf.constant(IMAGE, tf.float32) / 255.0
    clip = functools.partial(tf.clip_by_value, clip_value_min=0.0, clip_value_max=1.0)
    for ops in ("simclr", "byol"):
        for f in (0.3, 1.6):
            got = distort.adjust_color(x, "contrast", tf.constant(f), ops)
            np.testing.assert_allclose(got, clip(tf.image.adjust_contrast(x, f)), atol=1e-6)
            got = distort.adjust_color(x, "saturation", tf.constant(f), ops)
            np.testing.assert_allclose(got, clip(tf.image.adjust_saturation(x, f)), atol=1e-6)
        got = distort.adjust_color(x, "hue", tf.constant(0.2), ops)
        np.testing.assert_allclose(got, clip(tf.image.adjust_hue(x, 0.2)), atol=1e-6)
    got = distort.adjust_color(x, "brightness", tf.constant(-0.3), "byol")
    np.testing.assert_allclose(got, clip(tf.image.adjust_brightness(x, -0.3)), atol=1e-6)
    got = distort.adjust_color(x, "brightness", tf.constant(1.4), "simclr")
    np.testing.assert_allclose(got, clip(x * 1.4), atol=1e-6)
    # torchvision's (data.color_jitter's): blends toward the grey mean / the grayscale image.
    grey = tf.image.rgb_to_grayscale(x)
    got = distort.adjust_color(x, "saturation", tf.constant(0.5), "torchvision")
    np.testing.assert_allclose(got, clip(grey + 0.5 * (x - grey)), atol=1e-6)
    got = distort.adjust_color(x, "contrast", tf.constant(0.5), "torchvision")
    np.testing.assert_allclose(
        got, clip(tf.reduce_mean(grey) + 0.5 * (x - tf.reduce_mean(grey))), atol=1e-6
    )
