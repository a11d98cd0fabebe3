"""Measuring input pipelines: images/s (wall and per CPU-second) and the JPEG decode ceiling.

Used by `pipelines/benchmark_input.py`. On a shared machine wall-clock rates swing with other
people's load, so each measurement also reports images per process CPU-second, and pipelines are
timed interleaved, several rounds each.

Example:
    rate = measure(build_dataset(cfg, split="train", global_batch_size=64), num_images=3000)
    rate["images_per_sec"], rate["images_per_cpu_sec"]
"""

from __future__ import annotations

import time

import tensorflow as tf

from transfer_tf.data.files import list_files


def measure(dataset: tf.data.Dataset, num_images: int, warmup_batches: int = 5) -> dict[str, float]:
    """Iterates `dataset` (batches whose first component has a leading batch dim) for
    `num_images` images after `warmup_batches`; returns wall and CPU rates."""
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    wall, cpu, seen = time.perf_counter(), time.process_time(), 0
    while seen < num_images:
        batch = next(iterator)
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        seen += int(first.shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_sec": seen / wall, "images_per_cpu_sec": seen / max(cpu, 1e-9)}


def load_encoded_images(
    pattern: str, num_images: int, image_key: str = "image/encoded"
) -> list[bytes]:
    """The first `num_images` encoded images of the shards matching `pattern`."""
    files = list_files(pattern)
    feature = {image_key: tf.io.FixedLenFeature((), tf.string)}
    ds = tf.data.TFRecordDataset(files).take(num_images)
    ds = ds.map(lambda r: tf.io.parse_single_example(r, feature)[image_key])
    return [x.numpy() for x in ds]


def decode_ceiling_dataset(images: list[bytes], batch_size: int) -> tf.data.Dataset:
    """Full libjpeg decode of in-memory JPEGs on every core, nothing else: the upper bound."""
    ds = tf.data.Dataset.from_tensor_slices(images).repeat()
    ds = ds.map(
        lambda b: tf.shape(tf.io.decode_jpeg(b, channels=3)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
