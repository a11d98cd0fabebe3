"""Quiet TensorFlow start-up for the binaries, and a block with TensorFlow's INFO chatter muted.

TF 2.21 prints several C++ lines at import and device discovery (the oneDNN notice, "Could not find
cuda drivers", "failed call to cuInit", "All log messages before absl::InitializeLog()") that
`TF_CPP_MIN_LOG_LEVEL` does not silence, because they are logged before absl logging is set up.
They would bury a binary's one-line usage errors, so the binaries import TensorFlow with stderr
captured and replay every line except those known start-up notices.
Set `TF_CPP_MIN_LOG_LEVEL=0` (or 1) to see everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions"
)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and discovers devices with the known start-up notices filtered out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1") or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not _STARTUP_NOISE.search(line):
                    sys.stderr.write(line + "\n")
            sys.stderr.flush()


@contextlib.contextmanager
def info_logs_muted() -> Iterator[None]:
    """Within the block, INFO lines of absl's and TensorFlow's Python loggers are dropped.

    TensorFlow logs through both (`tf.saved_model.save`: a line per signature listing ~100
    captured-input names, "Assets written to"). Each logger's own level is restored afterwards:
    `absl.logging.set_verbosity` would instead pin absl's logger at the process's verbosity flag,
    which outside a binary is WARNING, muting the caller's INFO logs for the rest of the process.

    Example:
        with info_logs_muted():
            tf.saved_model.save(module, path)
    """
    loggers = [logging.getLogger("absl"), logging.getLogger("tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(logging.WARNING, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
