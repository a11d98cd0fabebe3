"""How a build's worker processes start: a fork of this process when that is safe, else a forkserver.

A fork copies this process as it is, TensorFlow already imported, so a worker is ready in
milliseconds. The forkserver is a fresh interpreter that imports the builders (and so TensorFlow)
a second time (~5-10 s on 2 cores, BENCHMARKS.md issue 34) before it forks the first worker; on a
3,000-image COCO build that second import was most of the gap to Model Garden, whose
`create_coco_tf_record` forks its parent (`mp.Pool()`). But a fork copies only the forking thread:
any lock another thread held at that moment stays locked in the child forever. So we fork only a
process that has no threads of its own yet: see `start_method` for the rule.

Example:
    method, why = start_method(["/data/coco/train2017", "/out/train-00000-of-00008.tfrecord"])
    ctx = pool_context(method)          # "fork": forked from here, ready at once
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
from collections.abc import Iterable

import tensorflow  # noqa: F401  (the baseline below is the thread count after this import)

_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def thread_count() -> int | None:
    """This process's OS threads (Python's and every library's), or None where /proc has none."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _threads_after_import() -> int | None:
    """The thread count now, or None when TensorFlow has already run an op (its eager context
    is initialized, and with it the thread pools this count must not include: never fork then).

    The context object alone is not enough to refuse: absl's start-up callbacks (and
    `list_physical_devices`) create it without initializing it, and it starts no thread then."""
    try:
        from tensorflow.python.eager import context

        ctx = context.context_safe()
        if ctx is not None and getattr(ctx, "_initialized", True):
            return None
    except (ImportError, AttributeError):  # moved in another TensorFlow: the count alone decides
        pass
    return thread_count()


# Measured when the builders are imported: TensorFlow's import leaves a few threads (3 here, the
# main one included) that hold no lock a worker needs; running a TensorFlow op starts its thread
# pools (8 here) and a gs:// client its own, which is what a fork must not copy.
THREADS_AFTER_IMPORT = _threads_after_import()

# What the forkserver imports once; every worker is forked from it with these modules loaded.
_WORKER_PRELOAD = ["transfer_tf.data.builders.forkserver_preload"]


def start_method(paths: Iterable[str] | None) -> tuple[str, str]:
    """Returns "fork" when forking this process is safe, else "forkserver" ("spawn" where that
    is missing), and why (for the log).

    Safe means both:
      * every input and output path of the build (`paths`) is local: a `scheme://` path (gs://,
        s3://, hdfs://...) means this process has started, or will start, that filesystem's
        client, whose threads and locks a fork would copy mid-use. None (paths not given) is
        treated as remote.
      * this process runs no more OS threads than right after the builders' imports
        (`THREADS_AFTER_IMPORT`): more means it has started threads since (a TensorFlow op's
        thread pool, a remote client, the caller's own), and a lock one of them holds at the
        fork would deadlock the worker that needs it. A process that ran a TensorFlow op before
        importing the builders has no such count, and never forks.
    Otherwise the workers come from the forkserver, a clean interpreter that imports TensorFlow
    once more (slower to start, safe whatever this process has done).
    """
    fallback = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if "fork" not in mp.get_all_start_methods():
        return fallback, "this platform cannot fork"
    if paths is None:
        return fallback, "the build's paths were not given (may be remote)"
    remote = next((p for p in paths if _REMOTE.match(p)), None)
    if remote is not None:
        return fallback, f"{remote} is remote: a fork would copy its client's threads and locks"
    now, base = thread_count(), THREADS_AFTER_IMPORT
    if now is None or base is None:
        return fallback, (
            "no thread count to compare (no /proc, or TensorFlow ran an op before the builders "
            "were imported)"
        )
    if now > base:
        return fallback, (
            f"this process runs {now} threads, {base} after importing the builders (a "
            "TensorFlow op's thread pool or other threads: a fork would copy their locks)"
        )
    return "fork", f"local paths and {now} threads, as after importing the builders"


def pool_context(method: str) -> mp.context.BaseContext:
    """The multiprocessing context for `start_method`'s choice.

    "forkserver": the server imports `_WORKER_PRELOAD` (the builders, TensorFlow) once, before any
    filesystem is touched, and forks each worker from that clean state, so workers share its
    pages instead of each importing TensorFlow (spawn, the fallback where forkserver is missing,
    does that). "fork": workers are copies of this process; the caller freezes the garbage
    collector first (`gc.freeze`) so they keep its pages shared, as `forkserver_preload` does.
    """
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_WORKER_PRELOAD)
    return ctx
