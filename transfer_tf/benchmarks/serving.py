"""Serving-cost benchmark: exported `serving_default` (decode + crop + resize + model) versus the
Keras model alone on already-preprocessed uint8 tensors.

Example:
    result = benchmark_export(cfg, batch_size=64, iterations=3, latency_iterations=10)
    result["serving_default"]["batch1_latency_ms_p50"], result["keras_model"]["throughput_img_s"]
"""

from __future__ import annotations

import io
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from transfer_tf.config import ExperimentConfig
from transfer_tf.data.augment import preprocess_for_eval
from transfer_tf.export.saved_model import BYTES_INPUT, export_saved_model


def synthetic_jpegs(count: int, height: int, width: int, seed: int) -> list[bytes]:
    """`count` JPEGs (quality 90) of smooth gradients plus mild noise: photo-like decode cost."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [
            127 + 100 * np.sin(x / rng.uniform(20, 80) + y / rng.uniform(20, 80) + p) for p in phase
        ]
        image = np.stack(channels, -1) + rng.normal(0, 8, (height, width, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _time(fn, iterations: int) -> list[float]:
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _stats(batch1: list[float], batch_n: list[float], batch_size: int) -> dict:
    return {
        "batch1_latency_ms_p50": round(1e3 * float(np.median(batch1)), 2),
        "batch1_latency_ms_min": round(1e3 * float(np.min(batch1)), 2),
        f"batch{batch_size}_throughput_img_s": round(batch_size / float(np.median(batch_n)), 1),
    }


def benchmark_export(
    model,
    cfg: ExperimentConfig,
    *,
    batch_size: int = 64,
    iterations: int = 3,
    latency_iterations: int = 10,
    source_size: tuple[int, int] = (375, 500),
    seed: int = 0,
) -> dict:
    """Exports `model` to a temp dir, reloads it, and times both paths on CPU.

    Args:
      model: Keras classifier; cfg: its config (image size, crop, classes, top-k).
      batch_size: images per throughput batch; iterations: timed throughput batches (after one
        warm-up); latency_iterations: timed batch-1 calls (after one warm-up).
      source_size: (height, width) of the synthetic JPEGs (375x500 is a typical ImageNet photo).
    Returns:
      {"serving_default": stats, "keras_model": stats, "export_s": seconds} where stats holds
      `batch1_latency_ms_p50`, `batch1_latency_ms_min`, `batch{N}_throughput_img_s`.
    """
    jpegs = synthetic_jpegs(batch_size, *source_size, seed=seed)
    with tempfile.TemporaryDirectory(prefix="benchmark_export_") as tmp:
        start = time.perf_counter()
        path = export_saved_model(model, cfg, os.path.join(tmp, "export"))
        export_s = time.perf_counter() - start
        serve = tf.saved_model.load(path).signatures["serving_default"]
        one = {BYTES_INPUT: tf.constant(jpegs[:1])}
        many = {BYTES_INPUT: tf.constant(jpegs)}
        serve(**one)
        serve(**many)
        serving = _stats(
            _time(lambda: serve(**one), latency_iterations),
            _time(lambda: serve(**many), iterations),
            batch_size,
        )

    pixels = np.stack(
        [preprocess_for_eval(b, cfg.data.image_size, cfg.data.eval_crop_fraction) for b in jpegs]
    )
    call = tf.function(lambda x: model(x, training=False))
    x1, xn = tf.constant(pixels[:1]), tf.constant(pixels)
    call(x1).numpy()
    call(xn).numpy()
    keras_stats = _stats(
        _time(lambda: call(x1).numpy(), latency_iterations),
        _time(lambda: call(xn).numpy(), iterations),
        batch_size,
    )
    return {"serving_default": serving, "keras_model": keras_stats, "export_s": round(export_s, 1)}
