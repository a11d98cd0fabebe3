"""The input-pipeline benchmark's data: ImageNet-sized JPEGs in classification TFRecord shards.

Two kinds, both reproducible from `seed`:

* `photos`: random crops of real photographs (a folder of *.jpg/*.jpeg/*.png), mirrored at random,
  resized so the long side is `long_side` (500, Flickr's "medium" size that most ImageNet images
  have) and re-encoded at a random JPEG quality. Their entropy, and so their decode cost, is close
  to ImageNet's.
* `noise`: a smooth random colour field plus strong per-pixel noise at quality 90 -- the worst case
  for the JPEG decoder (~0.7 bytes per pixel, ~150 KB per image; ImageNet averages ~110 KB),
  the kind of set the benchmark used before photos.

Records use `schemas.classification_example` with labels 1..1000, so the shards read exactly like
public ImageNet shards (`label_offset=1`).

Example:
    stats = write_benchmark_shards("/tmp/bench", 3000, kind="photos", photo_dir="/data/photos")
    # -> {"kind": "photos", "num_images": 3000, "num_shards": 16, "mean_bytes": ..., ...}
"""

from __future__ import annotations

import io
import os
import statistics

import numpy as np
import tensorflow as tf  # only for tf.io.TFRecordWriter
from PIL import Image

from transfer_tf.data import schemas
from transfer_tf.datagen.photos import load_photos
from transfer_tf.errors import UsageError

KINDS = ("photos", "noise")
NOISE_QUALITY = 90
NOISE_SIGMA = 40.0
# ImageNet's typical landscape image is 500x375 or 500x333: the short side is >= 2/3 of the long.
MIN_SHORT_FRACTION = 333 / 500
MIN_CROP_FRACTION = 0.6


def _photo_image(photo: Image.Image, rng: np.random.Generator, long_side: int) -> Image.Image:
    """A random 60-100 % crop of `photo`, maybe mirrored, with its long side set to `long_side`."""
    w, h = photo.size
    cw = int(rng.integers(max(1, int(np.ceil(MIN_CROP_FRACTION * w))), w + 1))
    ch = int(rng.integers(max(1, int(np.ceil(MIN_CROP_FRACTION * h))), h + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    image = photo.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = long_side / max(cw, ch)
    # The long side is set exactly (not rounded from the scale) so every image has the same one.
    size = (
        (long_side, max(1, round(ch * scale)))
        if cw >= ch
        else (max(1, round(cw * scale)), long_side)
    )
    return image.resize(size, Image.Resampling.BICUBIC)


def _noise_image(rng: np.random.Generator, long_side: int) -> Image.Image:
    """Smooth random colours plus gaussian noise: little for JPEG to compress, so it decodes slowly."""
    short = int(rng.integers(max(1, round(MIN_SHORT_FRACTION * long_side)), long_side + 1))
    portrait = bool(rng.random() < 0.5)
    width, height = (short, long_side) if portrait else (long_side, short)
    field_shape = (16, 12, 3) if portrait else (12, 16, 3)
    field = rng.integers(0, 256, size=field_shape, dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC))
    noisy = smooth.astype(np.float32) + rng.normal(0.0, NOISE_SIGMA, size=smooth.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_benchmark_shards(
    output_dir: str,
    num_images: int,
    *,
    kind: str = "photos",
    photo_dir: str = "",
    num_shards: int = 16,
    seed: int = 0,
    long_side: int = 500,
    quality_range: tuple[int, int] = (75, 95),
) -> dict:
    """Writes `num_images` JPEGs of `kind` to `output_dir/train-%05d-of-%05d`; returns size stats.

    Image i goes to shard i % num_shards. Each shard is written under a temporary name and renamed
    when complete, so an interrupted run never leaves a shard that looks finished.
    """
    if kind not in KINDS:
        raise UsageError(f"kind '{kind}': unknown (expected one of {KINDS})")
    if num_shards < 1 or num_images < num_shards:
        raise UsageError(
            f"num_images={num_images}, num_shards={num_shards}: need num_images >= num_shards >= 1"
        )
    lo, hi = quality_range
    if not 1 <= lo <= hi <= 100:
        raise UsageError(f"quality_range={quality_range}: need 1 <= low <= high <= 100")
    # Photos are read before anything is written, so a bad photo_dir leaves output_dir untouched.
    photos = load_photos(photo_dir) if kind == "photos" else []

    os.makedirs(output_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [
        os.path.join(output_dir, f"train-{s:05d}-of-{num_shards:05d}") for s in range(num_shards)
    ]
    temps = [f"{name}.tmp-{os.getpid()}" for name in names]
    writers = [tf.io.TFRecordWriter(t) for t in temps]
    sizes, pixels = [], []
    try:
        for i in range(num_images):
            # One rng drawn in image order: the same seed gives byte-identical shards.
            if kind == "photos":
                image = _photo_image(photos[i % len(photos)], rng, long_side)
                quality = int(rng.integers(lo, hi + 1))
            else:
                image = _noise_image(rng, long_side)
                quality = NOISE_QUALITY
            label = int(rng.integers(1, 1001))
            encoded = _jpeg(image, quality)
            width, height = image.size
            example = schemas.classification_example(
                encoded, label, f"n{label:08d}", height, width, f"bench_{i:06d}.JPEG"
            )
            writers[i % num_shards].write(example.SerializeToString())
            sizes.append(len(encoded))
            pixels.append(width * height)
        for writer in writers:
            writer.close()
        for temp, name in zip(temps, names, strict=True):
            os.replace(temp, name)
    finally:
        # On failure: no half-written temporaries are left behind (close() is idempotent).
        for writer, temp in zip(writers, temps, strict=True):
            writer.close()
            if os.path.exists(temp):
                os.remove(temp)
    return {
        "kind": kind,
        "num_images": num_images,
        "num_shards": num_shards,
        "mean_bytes": round(statistics.fmean(sizes), 1),
        "median_bytes": statistics.median(sizes),
        "mean_pixels": round(statistics.fmean(pixels), 1),
        "bytes_per_pixel": round(sum(sizes) / sum(pixels), 4),
    }
