"""Runs shard jobs on a worker pool, with the calling process writing shards until the pool is up.

Where the pool's workers come from a forkserver (`worker_start.start_method`: a remote path, or a
caller with threads of its own), the server first imports TensorFlow (~5-10 s on 2 cores,
BENCHMARKS.md), in series after the caller's own import: on a small build that start-up ate the
second worker's gain (3,000 COCO images on 2 cores: 2 workers 57 s, 1 worker 60 s). Meanwhile the
caller sat idle. Here it writes whole shards in-process (as the one-worker path does) while the
pool starts, and stops taking shards once a worker has returned one: from then on the pool's
workers have the cores. The pool always holds `workers` queued jobs, so a worker never waits for
the caller to finish a shard. Workers forked from the caller are up at once: pass no
`init_local` and the caller only feeds the pool (writing a shard too would put one process more
than `workers` on the cores and could finish last).

Example:
    with ctx.Pool(2, initializer=init, initargs=(encoder, counter)) as pool:  # forkserver
        for info in drain(pool, jobs, 2, write_one, lambda: init(encoder, counter)):
            results[info["file"]] = info
    with fork_ctx.Pool(2, initializer=init, initargs=(encoder, counter)) as pool:  # fork
        for info in drain(pool, jobs, 2, write_one, None):
            results[info["file"]] = info
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def drain(
    pool: Any,
    jobs: Sequence[Any],
    workers: int,
    write_one: Callable[[Any], dict],
    init_local: Callable[[], None] | None,
    poll_s: float = 0.05,
) -> Iterator[dict]:
    """Yields each job's result (`write_one(job)`), from the pool or from this process.

    `init_local`: readies this process to write a shard itself while the pool starts (called
    once, before its first one); None: the pool is up at once, this process writes none.

    A worker's exception is re-raised here when its result is collected; the caller's pool
    context then stops the other workers (and the caller cleans up their partial files).
    """
    queue = collections.deque(jobs)
    in_flight: list[Any] = []

    def feed() -> None:
        while queue and len(in_flight) < workers:
            in_flight.append(pool.apply_async(write_one, (queue.popleft(),)))

    feed()
    pool_up = local_ready = False
    while in_flight or queue:
        done = [r for r in in_flight if r.ready()]
        for r in done:
            in_flight.remove(r)
            pool_up = True
            yield r.get()
        if done:
            feed()
        elif queue and not pool_up and init_local is not None:
            if not local_ready:
                init_local()
                local_ready = True
            yield write_one(queue.popleft())
        elif in_flight:
            in_flight[0].wait(poll_s)
