"""The files a data pattern names (any TensorFlow filesystem: local, gs://, ...).

Example:
    list_files("/data/imagenet/train-0000*, /data/extra/train-*")  # sorted, de-duplicated
"""

from __future__ import annotations

import tensorflow as tf

from transfer_tf.errors import UsageError


def list_files(pattern: str) -> list[str]:
    """Sorted files matching comma-separated glob patterns (any TF filesystem).

    Raises:
      UsageError: empty pattern, or a pattern that matches nothing.
    """
    if not pattern.strip():
        raise UsageError("data file pattern is empty (set data.train_pattern / data.eval_pattern)")
    files: set[str] = set()
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        matched = tf.io.gfile.glob(part)
        if not matched:
            raise UsageError(f"data file pattern '{part}' matches no files")
        files.update(matched)
    return sorted(files)
