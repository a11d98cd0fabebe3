"""Builder workers fork from the caller when that is safe (local paths, no threads of its own
since the builders' import), else come from the forkserver (`worker_start.start_method`)."""

from __future__ import annotations

import pytest

from transfer_tf.data.builders import pool_drain, worker_start


@pytest.fixture
def no_new_threads(monkeypatch):
    """This process has only the threads it had after the builders' import (whatever ran here)."""
    monkeypatch.setattr(worker_start, "thread_count", lambda: worker_start.THREADS_AFTER_IMPORT)


def test_local_paths_fork(no_new_threads):
    assert worker_start.start_method(["/data/coco/images", "out/train"])[0] == "fork"


@pytest.mark.parametrize(
    "remote", ["gs://bucket/coco/train", "s3://bucket/images", "hdfs://namenode/out"]
)
def test_a_remote_path_uses_the_forkserver(no_new_threads, remote):
    # The rule only reads the strings: nothing is contacted.
    method, why = worker_start.start_method(["/data/coco/images", remote, "/out/train"])
    assert method == "forkserver" and why.startswith(f"{remote} is remote")


def test_unknown_paths_or_more_threads_use_the_forkserver(no_new_threads, monkeypatch):
    assert worker_start.start_method(None)[0] == "forkserver"
    monkeypatch.setattr(worker_start, "thread_count", lambda: worker_start.THREADS_AFTER_IMPORT + 1)
    assert worker_start.start_method(["/data/images"])[0] == "forkserver"


class _BusyPool:
    """Forked workers still busy with their first shards: each result is ready after 3 checks."""

    def apply_async(self, fn, args):
        value, polls = fn(args[0]) | {"by": "pool"}, [3]

        class Result:
            def ready(self):
                polls[0] -= 1
                return polls[0] < 0

            def wait(self, timeout):
                pass

            def get(self):
                return value

        return Result()


def test_with_forked_workers_the_caller_writes_no_shard():
    # No `init_local`: the pool is up at once, so this process only feeds it and waits.
    got = list(pool_drain.drain(_BusyPool(), list(range(5)), 2, lambda j: {"job": j}, None))
    assert sorted(r["job"] for r in got) == list(range(5)) and {r["by"] for r in got} == {"pool"}
