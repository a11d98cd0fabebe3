"""Output locations: checked before any work, and write failures told in one line.

A job that reads its data for minutes before finding that `--model_dir` is read-only wastes those
minutes; a write that fails on a full disk must not end in a TensorFlow traceback. Both kinds of
failure become an `errors.OutputError` naming the path and the operating system's reason
(`Permission denied`, `No space left on device`, `File too large` under `ulimit -f`, ...).

Example:
    check_writable("runs/r50", "--model_dir")           # before the data is read
    try:
        write_the_file(path)
    except Exception as e:
        if not is_write_error(e):
            raise
        raise OutputError(f"cannot write '{path}': {write_error_reason(e)}") from None
"""

from __future__ import annotations

import errno
import os
import re
import uuid

from transfer_tf.errors import OutputError

# errno values that mean "this location cannot take the write" (not a bug of ours).
WRITE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EDQUOT,
        errno.ENOTDIR,
        errno.EISDIR,
    }
)
# The same reasons as TensorFlow's file system layer words them inside an OpError message.
_TF_WRITE_REASON = re.compile(
    r"(No space left on device|File too large|Read-only file system|Permission denied"
    r"|Disk quota exceeded|Not a directory|Is a directory|Operation not permitted)",
    re.IGNORECASE,  # TensorFlow's own wording: "DIR is not a directory"
)
# Reasons that only a write can have (what `cli` reports for an error no code path expected).
FULL_OR_READ_ONLY = (
    "No space left on device",
    "File too large",
    "Read-only file system",
    "Disk quota exceeded",
)


def write_error_reason(error: BaseException) -> str | None:
    """The OS reason of a failed write (`'No space left on device'`), or None when `error` is not
    one (a bug, a corrupt input...). Accepts OSError and TensorFlow's OpError."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        return error.strerror or os.strerror(error.errno)
    match = _TF_WRITE_REASON.search(str(getattr(error, "message", "")) or str(error))
    if match and type(error).__module__.startswith("tensorflow"):
        return match.group(1).capitalize()
    return None


def is_write_error(error: BaseException) -> bool:
    """Whether `error` says an output location cannot take a write (see `write_error_reason`)."""
    return write_error_reason(error) is not None


def unwritable_error(flag: str, folder: str, reason: str) -> OutputError:
    """`<flag>: cannot write to '<folder>': <reason>; choose a writable location`."""
    return OutputError(f"{flag}: cannot write to '{folder}': {reason}; choose a writable location")


def check_writable(folder: str, flag: str) -> None:
    """Creates `folder` if needed and writes then removes a probe file in it.

    Call it before a job reads its data, so an unwritable output fails in seconds.
    Args:
      folder: a local or TensorFlow file system path (gs://...).
      flag: the flag or key that named it, for the message.
    Raises:
      OutputError: `<flag>: cannot write to '<folder>': <OS reason>; choose a writable location`.
    """
    import tensorflow as tf

    probe = os.path.join(folder, f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except Exception as e:  # noqa: BLE001  (classified below; anything else is re-raised)
        reason = write_error_reason(e)
        if reason is None:
            raise
        raise unwritable_error(flag, folder, reason) from None
