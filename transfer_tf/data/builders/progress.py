"""Build progress: a counter shared by the writer processes and the thread that logs it.

Example:
    counter = LocalCounter()            # or multiprocessing's Value("q", 0) for worker processes
    with Progress(counter, total=1_281_167, label="imagenet", every_s=10.0):
        ...                             # writers add to counter.value under counter.get_lock()
"""

from __future__ import annotations

import threading
import time
from typing import Any

from absl import logging


class Progress:
    """Logs `done/total images, rate, ETA` every `every_s` seconds from a shared counter."""

    def __init__(self, counter: Any, total: int, label: str, every_s: float) -> None:
        self.counter, self.total, self.label, self.every_s = counter, total, label, every_s
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.log()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.log()

    def log(self) -> None:
        done = self.counter.value
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?"
        pct = 100.0 * done / self.total if self.total else 100.0
        logging.info(
            "%s: %d/%d images (%.1f%%), %.1f images/s, ETA %s",
            self.label,
            done,
            self.total,
            pct,
            rate,
            eta_text,
        )


class LocalCounter:
    """Same interface as `multiprocessing.Value` for the in-process path."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock
