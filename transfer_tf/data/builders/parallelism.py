"""How many worker processes a build uses when `--num_workers` is not given: the usable cores.

"Usable" is the CPU affinity of this process (`os.sched_getaffinity`), not the machine's core
count: a container or `taskset` that grants 2 of 64 cores gets 2 workers, not 64 processes
fighting over 2 cores. Model Garden's `create_coco_tf_record` defaults to a pool of
`os.cpu_count()` processes; ours matches it where the two agree and does better where they don't.

One refinement for tiny builds: the one-worker path writes in-process with no pool at all, while
a pool's workers come from a forkserver that imports TensorFlow once more (~3-5 s on 2 cores,
BENCHMARKS.md) wherever forking the caller is not safe (a remote path, or a caller with threads
of its own: `worker_start.start_method`). Below `MIN_ITEMS_PER_DEFAULT_WORKER` images per worker
that start-up costs more than the parallel encode saves, so the default gives each worker at
least that many. Workers forked from the caller (local builds) start in milliseconds, where the
floor is conservative; it is one value for both because the start method is chosen only when the
shards are written. An explicit `--num_workers` is always honoured (capped only by the number of
shards to write).

Example:
    default_workers(items=1_281_167, shards=1024)   # -> len(os.sched_getaffinity(0))
    default_workers(items=40, shards=4)             # -> 1 (in-process)
"""

from __future__ import annotations

import os

# ~2 s of encoding per worker at ~130 images/s per core (full decode + checks, BENCHMARKS.md):
# about the forkserver's start-up, so smaller shares lose (a forked pool starts faster). Start-up
# and encode both scale with the core's speed, so the break-even count holds across CPU classes
# to first order.
MIN_ITEMS_PER_DEFAULT_WORKER = 256


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask); `os.cpu_count()` where there is none."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows: no affinity API
        return max(1, os.cpu_count() or 1)


def default_workers(items: int, shards: int) -> int:
    """Workers for a build of `items` images in `shards` files when the user set none: the
    usable cores, but never more than the shards (a worker writes whole shards) nor more than
    one per `MIN_ITEMS_PER_DEFAULT_WORKER` images."""
    by_size = max(1, items // MIN_ITEMS_PER_DEFAULT_WORKER)
    return max(1, min(usable_cores(), max(1, shards), by_size))
