"""Builders' output faults: an unwritable output folder, a disk that fills up mid-build.

A build reads for minutes to hours before it writes its first shard; finding then that the output
folder is read-only wastes all of it. `check_writable` writes and removes a probe file in the
output folder before the builder looks at its input. During the build, `writing(path)` turns the
write errors of TensorFlow's filesystems (`tf.errors.OpError`: a full disk is
`ResourceExhaustedError`, a file-size limit `OutOfRangeError`) and of Python (`OSError`) into a
`WriteError`, a one-line `UsageError` naming the path and the operating system's reason, which
`sharded_writer` reports after removing the partial file.

Example:
    check_writable("/data/tfrecords", "--output_dir")
    with writing("/data/tfrecords/labels.txt"):
        write_text_atomic("/data/tfrecords/labels.txt", text)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import tensorflow as tf

from transfer_tf.errors import UsageError
from transfer_tf.io_errors import check_writable as probe_writable

# What a failed write raises: TensorFlow's file APIs raise OpErrors, Python's open/write OSError.
WRITE_ERRORS = (OSError, tf.errors.OpError)


def error_reason(error: BaseException) -> str:
    """The operating system's reason in `error`, without the path TensorFlow puts first.

    `OutOfRangeError("/out/x.tmp-1; File too large")` -> "File too large"; `OSError` -> strerror.
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    # TensorFlow's POSIX filesystem formats errors as "<path>; <strerror>".
    return first.rsplit("; ", 1)[-1].strip()


class WriteError(UsageError):
    """A write to `path` failed; the message is one line: `cannot write PATH: REASON`."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # raised in worker processes: must survive pickling to the parent
        return (WriteError, (self.path, self.reason))


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turns a write error inside the block into `WriteError(path, reason)`."""
    try:
        yield
    except WRITE_ERRORS as e:
        raise WriteError(path, error_reason(e)) from None


def remove_quietly(path: str) -> None:
    """Removes `path` if it exists; a failure to remove is ignored (the caller is already failing)."""
    try:
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    except WRITE_ERRORS:
        pass


def check_writable(directory: str, flag: str) -> None:
    """Creates `directory` if needed and writes and removes a small probe file in it.

    Local folders the probe had to create are removed again (a build that then stops on a bad
    input leaves no output folder behind); the build creates them for good when it writes.

    Args:
      directory: the build's output folder (any TensorFlow filesystem path).
      flag: the flag that named it (`--output_dir`), for the message.
    Raises:
      OutputError (a UsageError): `FLAG: cannot write to 'DIR': REASON; choose a writable
        location` (io_errors.check_writable, the one write probe), before any input is read.
    """
    created = _missing_local_folders(directory)
    try:
        probe_writable(directory, flag)
    finally:
        for folder in created:  # deepest first; rmdir never removes what another task wrote
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _missing_local_folders(directory: str) -> list[str]:
    """The local folders `makedirs(directory)` would create, deepest first ([] for remote)."""
    if "://" in directory:  # object stores have no folders to leave behind
        return []
    missing, path = [], os.path.abspath(directory)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing
