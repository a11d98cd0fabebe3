"""Two augmented views of one image, on the graph, per image, stateless-seeded (SimCLR / BYOL).

Each view: random resized crop (area 0.08-1, aspect 3/4-4/3) to `image_size` + random flip,
then colour jitter with probability `jitter_prob` (random or SimCLR's fixed order), random
grayscale, Gaussian blur, solarize, each with its own per-view probability (BYOL's asymmetric
recipe: blur 1.0 / 0.1, solarize 0.0 / 0.2). uint8 in, uint8 out: normalisation stays in the
model, as for supervised training.

The crop is the pipeline's own (`data.augment`: `sample_crop_window`, `resize_to_uint8`, or the
fused JPEG `random_resized_crop`), the jitter is `data.distort.color_jitter`, grayscale is
`tf.image`. TensorFlow has no Gaussian blur op, so the blur is a separable `depthwise_conv2d`
with reflected borders (keras-cv's `RandomGaussianBlur` draws from its own unseeded generator).

Randomness: everything is drawn from sub-seeds of one `seed` (int32/int64 `[2]`; the input
pipeline's per-record `[stream key, position]`): same image and seed, same two views; view 1 and
view 2 use independent sub-seeds.

Example:
    cfg = ViewConfig(image_size=224)                     # or simclr_views(224), byol_views(224)
    v1, v2 = two_views(image_uint8, tf.constant([0, 7], tf.int64), cfg)   # uint8 [224, 224, 3] x2
    v1, v2 = two_views_from_bytes(jpeg_bytes, seed, cfg)                  # the pipeline's path
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.data import augment, distort
from transfer_tf.data.parsers import ViewsFn

# Sub-seed slots of one view's colour seed (`stateless_split(color_seed, _NUM_COLOR_SEEDS)`).
_JITTER_APPLY, _JITTER, _ORDER, _GRAY, _BLUR_APPLY, _BLUR_SIGMA, _SOLARIZE = range(7)
_NUM_COLOR_SEEDS = 7


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """What the two views are made of. Pairs `(view 1, view 2)` give per-view probabilities.

    Attributes:
      image_size: output side S of both views.
      area_range, aspect_range: of the random resized crop (fraction of the image, width/height).
      flip: random left-right flip (p = 0.5).
      jitter: (brightness, contrast, saturation, hue) strengths; SimCLR's strength s gives
        (0.8s, 0.8s, 0.8s, 0.2s). Definitions: `data.distort.color_jitter`.
      jitter_ops: what the jitter ops are (`distort.JITTER_OPS`): `simclr` (`tf.image` per-channel
        contrast and HSV saturation, multiplicative brightness), `byol` (the same with additive
        brightness), or `torchvision` (blends toward grey, as the supervised data.color_jitter).
      jitter_prob: probability that a view is jittered at all (then all four ops apply).
      jitter_random_order: the four ops in a random order per view (SimCLR's default) or fixed
        (brightness, contrast, saturation, hue: SimCLR's `color_jitter_nonrand`).
      grayscale_prob: probability of converting to gray (3 equal channels).
      blur_prob: per view; blur_sigma: sigma range in pixels of the output view, drawn uniformly;
        blur_kernel_fraction: kernel side as a fraction of `image_size` (SimCLR: 10 %, odd).
      solarize_prob: per view; pixels >= 128 become 255 - pixel.
    """

    image_size: int = 224
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_range: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)
    jitter_ops: str = "simclr"
    jitter_prob: float = 0.8
    jitter_random_order: bool = True
    grayscale_prob: float = 0.2
    blur_prob: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_prob: tuple[float, float] = (0.0, 0.2)


def simclr_views(image_size: int = 224, strength: float = 1.0) -> ViewConfig:
    """SimCLR's ImageNet views: jitter (0.8s, 0.8s, 0.8s, 0.2s) p 0.8 in random order with its
    ops (`tf.image` contrast and saturation, v2's multiplicative brightness), grayscale p 0.2,
    blur p 0.5 on both views, no solarize."""
    s = strength
    return ViewConfig(
        image_size=image_size,
        jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
        jitter_ops="simclr",
        blur_prob=(0.5, 0.5),
        solarize_prob=(0.0, 0.0),
    )


def byol_views(image_size: int = 224) -> ViewConfig:
    """BYOL's views (its Table 6): jitter (0.4, 0.4, 0.2, 0.1) p 0.8 with its ops (additive
    brightness, `tf.image` contrast and saturation), grayscale p 0.2, blur p 1.0 / 0.1, solarize
    p 0.0 / 0.2."""
    return ViewConfig(
        image_size=image_size,
        jitter=(0.4, 0.4, 0.2, 0.1),
        jitter_ops="byol",
        blur_prob=(1.0, 0.1),
        solarize_prob=(0.0, 0.2),
    )


def _coin(seed: tf.Tensor, p: float) -> tf.Tensor:
    """bool scalar, True with probability `p` (stateless)."""
    return tf.random.stateless_uniform([], seed) < p


def _maybe(seed: tf.Tensor, p: float, fn, image: tf.Tensor) -> tf.Tensor:
    """`fn(image)` with probability p. p = 0 / 1 build no branch (a tf.data cond costs ~40 us)."""
    if p <= 0.0:
        return image
    if p >= 1.0:
        return fn(image)
    return tf.cond(_coin(seed, p), lambda: fn(image), lambda: image)


def _jitter(image: tf.Tensor, seeds: list[tf.Tensor], cfg: ViewConfig) -> tf.Tensor:
    """`distort.color_jitter` with all four strengths, in a fixed or a random order."""
    if not cfg.jitter_random_order:
        return distort.color_jitter(image, seeds[_JITTER], *cfg.jitter, ops=cfg.jitter_ops)
    # A random permutation of the four ops. Each op rounds to uint8 between steps (<= 0.5/255
    # per op): `color_jitter` works uint8 -> uint8, and reusing it beats a float copy of it.
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[_ORDER]))
    op_seeds = tf.unstack(tf.random.experimental.stateless_split(seeds[_JITTER], 4))

    def one_op(op: int, current: tf.Tensor):
        strengths = [0.0] * 4
        strengths[op] = cfg.jitter[op]
        return lambda: distort.color_jitter(current, op_seeds[op], *strengths, ops=cfg.jitter_ops)

    for position in range(4):
        # Position p runs the op drawn for it; each op is `color_jitter` with only its strength.
        image = tf.switch_case(order[position], [one_op(op, image) for op in range(4)])
        image.set_shape([cfg.image_size, cfg.image_size, 3])
    return image


def grayscale(image: tf.Tensor) -> tf.Tensor:
    """uint8 `[H, W, 3]` -> its luma (`tf.image.rgb_to_grayscale`) in 3 equal channels, uint8."""
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """Separable Gaussian blur of uint8 `[H, W, 3]` (sigma float32 scalar, pixels) -> uint8.

    `kernel_size` is made odd (radius = kernel_size // 2); borders are reflected, so the edges
    are not darkened as by zero padding (SimCLR's 'SAME').
    """
    radius = max(kernel_size // 2, 1)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(x**2) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
    kernel /= tf.reduce_sum(kernel)
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    padded = tf.pad(
        tf.cast(image, tf.float32)[None],
        [[0, 0], [radius, radius], [radius, radius], [0, 0]],
        mode="REFLECT",
    )
    out = tf.nn.depthwise_conv2d(padded, horizontal, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, vertical, [1, 1, 1, 1], "VALID")[0]
    # Convex weights keep 0..255: round without a clip.
    return tf.ensure_shape(tf.cast(out + 0.5, tf.uint8), image.shape)


def solarize(image: tf.Tensor, threshold: int = 128) -> tf.Tensor:
    """uint8 `[H, W, 3]`: pixels >= `threshold` inverted (255 - x), BYOL's solarization."""
    return tf.where(image < threshold, image, 255 - image)


def distort_view(image: tf.Tensor, seed: tf.Tensor, cfg: ViewConfig, view: int) -> tf.Tensor:
    """The colour half of a view: jitter, grayscale, blur, solarize (BYOL's order).

    Args:
      image: uint8 `[S, S, 3]` crop; seed: int `[2]` colour seed of this view.
      view: 0 or 1, which entry of the per-view probabilities applies.
    Returns:
      uint8 `[S, S, 3]`.
    """
    seeds = list(tf.unstack(tf.random.experimental.stateless_split(seed, _NUM_COLOR_SEEDS)))
    if any(s > 0 for s in cfg.jitter):
        image = _maybe(
            seeds[_JITTER_APPLY], cfg.jitter_prob, lambda x: _jitter(x, seeds, cfg), image
        )
    image = _maybe(seeds[_GRAY], cfg.grayscale_prob, grayscale, image)
    kernel = int(cfg.image_size * cfg.blur_kernel_fraction)
    sigma = tf.random.stateless_uniform([], seeds[_BLUR_SIGMA], *cfg.blur_sigma)
    image = _maybe(
        seeds[_BLUR_APPLY], cfg.blur_prob[view], lambda x: gaussian_blur(x, sigma, kernel), image
    )
    image = _maybe(seeds[_SOLARIZE], cfg.solarize_prob[view], solarize, image)
    return tf.ensure_shape(image, [cfg.image_size, cfg.image_size, 3])


def crop_view(image: tf.Tensor, seed: tf.Tensor, cfg: ViewConfig) -> tf.Tensor:
    """Random resized crop + flip of a decoded uint8 `[H, W, 3]` -> uint8 `[S, S, 3]`.

    The window distribution is the pipeline's (`augment.sample_crop_window`: 10 attempts, the
    centered crop as fallback); seed int `[2]`.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = augment.sample_crop_window(
        tf.shape(image), crop_seed, cfg.area_range, cfg.aspect_range
    )
    crop = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    out = augment.resize_to_uint8(crop, cfg.image_size)
    if cfg.flip:
        out = tf.image.stateless_random_flip_left_right(out, flip_seed)
    return tf.ensure_shape(out, [cfg.image_size, cfg.image_size, 3])


def _view_seeds(seed: tf.Tensor) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """[(crop seed, colour seed) of view 1, (...) of view 2], independent sub-seeds of `seed`."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    return [(seeds[0], seeds[1]), (seeds[2], seeds[3])]


def two_views(image: tf.Tensor, seed: tf.Tensor, cfg: ViewConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Two views of a decoded uint8 image `[H, W, 3]` (seed int `[2]`) -> 2 x uint8 `[S, S, 3]`.

    Use it when the image is already decoded (TFDS, generated data); the crops are taken from
    the one decoded image.
    """
    (seed1, color1), (seed2, color2) = _view_seeds(seed)
    return (
        distort_view(crop_view(image, seed1, cfg), color1, cfg, 0),
        distort_view(crop_view(image, seed2, cfg), color2, cfg, 1),
    )


def two_views_from_bytes(
    image_bytes: tf.Tensor,
    seed: tf.Tensor,
    cfg: ViewConfig,
    *,
    decode_once: bool = False,
    jpeg_only: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Two views of encoded image bytes (scalar string; JPEG, PNG, GIF, BMP) -> 2 x uint8 `[S, S, 3]`.

    `decode_once=False` (default): each view is the pipeline's fused crop
    (`augment.random_resized_crop`): JPEG decodes only the crop window, at 1/2-1/8 scale when it
    is >= 2x the output. `decode_once=True` decodes the whole image once and crops it twice
    (`two_views`). Which is faster depends on image vs output size: for a 500x375 JPEG at 224 px
    on one (shared) core, the crops alone ran 255 img/s fused vs 416 decoding once; the colour
    ops then dominate (jitter and blur each roughly halve the rate). Same seed, same views for
    either path (the windows and flips match; JPEG pixels differ by the decode scale).
    """
    if decode_once:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return two_views(image, seed, cfg)
    views = []
    for view, (crop_seed, color_seed) in enumerate(_view_seeds(seed)):
        crop, _, _ = augment.random_resized_crop(
            image_bytes,
            cfg.image_size,
            crop_seed,
            area_range=cfg.area_range,
            aspect_range=cfg.aspect_range,
            flip=cfg.flip,
            jpeg_only=jpeg_only,
        )
        views.append(distort_view(crop, color_seed, cfg, view))
    return views[0], views[1]


def config_views(cfg: ExperimentConfig) -> ViewConfig:
    """The ViewConfig of an experiment: the `ssl.views` preset (`auto`: the method's) at
    `data.image_size`, jitter scaled by `ssl.color_strength` with the preset's ops (or
    torchvision's: `ssl.jitter_ops`), blur sigma `ssl.blur_sigma` scaled
    from `ssl.blur_reference_size` px to the view size, crop ranges and flip from `data`."""
    s, size = cfg.ssl, cfg.data.image_size
    preset = s.views if s.views != "auto" else s.method
    base = byol_views(size) if preset == "byol" else simclr_views(size)
    scale = size / s.blur_reference_size if s.blur_reference_size > 0 else 1.0
    return dataclasses.replace(
        base,
        jitter=tuple(j * s.color_strength for j in base.jitter),
        jitter_ops=base.jitter_ops if s.jitter_ops == "paper" else s.jitter_ops,
        blur_sigma=(s.blur_sigma[0] * scale, s.blur_sigma[1] * scale),
        area_range=tuple(cfg.data.crop_area_range),
        aspect_range=tuple(cfg.data.crop_aspect_range),
        flip=cfg.data.random_flip,
    )


def views_fn(cfg: ExperimentConfig) -> ViewsFn:
    """The input pipeline's two-view function of an experiment (`data.input.build_dataset`'s
    `views`): `(image bytes, seed, jpeg_only=...) -> (view1, view2)` uint8 `[S, S, 3]`."""
    return functools.partial(
        two_views_from_bytes, cfg=config_views(cfg), decode_once=cfg.ssl.decode_once
    )
