"""Atomic file writes: a temporary name in the same folder, then a rename.

A reader (or a rerun after a crash) never sees a half-written file, and a write that fails (disk
full, no permission) removes its temporary file and raises `errors.OutputError` naming the path.
Paths may be on any TensorFlow filesystem (local, `gs://...`).

Example:
    write_json_atomic("runs/x/eval_metrics.json", {"top_1_accuracy": 0.76})
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import tensorflow as tf

from transfer_tf.errors import OutputError
from transfer_tf.io_errors import write_error_reason


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` (creating its folder) via `path.tmp-<pid>` and a rename.

    Raises:
      OutputError: the folder or file cannot be written; the temporary file is gone.
    """
    folder = os.path.dirname(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if folder:
            tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except Exception as e:
        with contextlib.suppress(Exception):  # nothing to remove, or the folder is unwritable
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        reason = write_error_reason(e)
        if reason is None:
            raise
        raise OutputError(f"cannot write '{path}': {reason}") from None


def write_json_atomic(path: str, data: Any, indent: int = 2) -> None:
    """Writes `data` as JSON (newline-terminated) to `path`, atomically (see write_text_atomic)."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
