"""Atomic file writes: a temporary name in the same folder, then a rename.

A reader (or a rerun after a crash) never sees a half-written file. Paths may be on any TensorFlow
filesystem (local, `gs://...`).

Example:
    write_json_atomic("runs/x/eval_metrics.json", {"top_1_accuracy": 0.76})
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` (creating its folder) via `path.tmp-<pid>` and a rename."""
    folder = os.path.dirname(path)
    if folder:
        tf.io.gfile.makedirs(folder)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        # A failed write (a full disk) leaves no partial temporary file behind.
        try:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        except (OSError, tf.errors.OpError):
            pass
        raise


def write_json_atomic(path: str, data: Any, indent: int = 2) -> None:
    """Writes `data` as JSON (newline-terminated) to `path`, atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
