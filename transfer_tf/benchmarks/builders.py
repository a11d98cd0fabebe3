"""Builder throughput and memory: images/s with 1 and N workers, peak RSS at two dataset sizes.

Generates ImageNet-layout raw trees with `transfer_tf.datagen.shapes`, converts them in-process
(TensorFlow is imported once, so the numbers are conversion time, not start-up), and samples the
RSS of this process plus its worker processes every 20 ms.

Example:
    result = run_benchmark("/tmp/bench", small=400, large=1600, workers=(1, 2))
    result["images_per_s"]["2"], result["peak_rss_mb"]["1600"]
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil

from transfer_tf.data.builders.imagenet import build_imagenet
from transfer_tf.data.builders.sharded_writer import WriteOptions
from transfer_tf.datagen import raw_layouts, shapes

_NUM_CLASSES = 10


class _RssSampler:
    """Peak of (this process + children) RSS while active, in MiB."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._proc = psutil.Process()

    def _sample(self) -> None:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                # USS, not RSS, for forked workers: pages shared with the parent count once.
                total += child.memory_full_info().uss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> _RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def _raw_tree(root: str, train_images: int, size_range: tuple[int, int]) -> str:
    if not os.path.exists(os.path.join(root, raw_layouts.VAL_LABELS_FILE)):
        shapes.write_imagenet_like(
            root,
            num_classes=_NUM_CLASSES,
            train_per_class=train_images // _NUM_CLASSES,
            val_per_class=1,
            image_size_range=size_range,
            seed=0,
        )
    return root


def _build(raw: str, out: str, workers: int, shards: int) -> tuple[float, float, int]:
    shutil.rmtree(out, ignore_errors=True)
    with _RssSampler() as rss:
        start = time.perf_counter()
        build_imagenet(
            raw,
            out,
            train_shards=shards,
            validation_shards=1,
            options=WriteOptions(num_workers=workers, log_every_s=3600),
        )
        seconds = time.perf_counter() - start
    images = sum(
        len(os.listdir(os.path.join(raw, "train", d)))
        for d in os.listdir(os.path.join(raw, "train"))
    )
    images += len(os.listdir(os.path.join(raw, "val")))
    shutil.rmtree(out, ignore_errors=True)
    return seconds, rss.peak_mb, images


def run_benchmark(
    work_dir: str,
    small: int = 400,
    large: int = 1600,
    workers: Sequence[int] = (1, 2),
    size_range: tuple[int, int] = (300, 500),
    shards: int = 8,
) -> dict[str, Any]:
    """Returns {"images_per_s": {workers: rate}, "peak_rss_mb": {size: MiB}, ...}."""
    raw_small = _raw_tree(os.path.join(work_dir, f"raw_{small}"), small, size_range)
    raw_large = _raw_tree(os.path.join(work_dir, f"raw_{large}"), large, size_range)
    out = os.path.join(work_dir, "out")
    peak = {}
    # Small first: a peak that grew with the data would show as large > small.
    for n, raw in ((small, raw_small), (large, raw_large)):
        _, peak[str(n)], _ = _build(raw, out, 1, shards)
    rates = {}
    for w in workers:
        seconds, _, images = _build(raw_large, out, w, shards)
        rates[str(w)] = round(images / seconds, 1)
    return {
        "benchmark": "tfrecords",
        "images": images,
        "image_size_range": list(size_range),
        "shards": shards,
        "images_per_s": rates,
        "peak_rss_mb": peak,
        "cpus": os.cpu_count(),
    }
