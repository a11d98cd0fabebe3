"""Builder parallelism: without --num_workers every builder uses the usable cores (affinity)."""

from __future__ import annotations

import logging
import os

import pytest
from absl import flags

from transfer_tf.data.builders import parallelism, pool_drain, write_flags
from transfer_tf.data.builders.sharded_writer import (
    Encoded,
    Encoder,
    ShardSpec,
    WriteOptions,
    write_shards,
)
from transfer_tf.errors import UsageError


@pytest.fixture
def six_cores(monkeypatch):
    """This process may run on 6 cores (whatever the machine has)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)


def test_default_is_the_affinity_count_capped_by_shards_and_build_size(six_cores):
    per = parallelism.MIN_ITEMS_PER_DEFAULT_WORKER
    assert parallelism.usable_cores() == 6
    assert parallelism.default_workers(items=1_281_167, shards=1024) == 6
    assert parallelism.default_workers(items=1_281_167, shards=4) == 4  # a worker per shard
    assert parallelism.default_workers(items=3 * per, shards=32) == 3  # >= `per` images each
    assert parallelism.default_workers(items=40, shards=8) == 1  # in-process: no pool start-up


@pytest.mark.parametrize(
    "binary", ["make_imagenet_tfrecords", "make_coco_tfrecords", "make_folder_tfrecords"]
)
def test_every_builder_binary_defaults_to_the_usable_cores(six_cores, binary):
    fv = flags.FlagValues()
    write_flags.define_write_flags(fv)
    fv(["prog"])
    options = write_flags.write_options_from_flags(fv)
    assert options.num_workers is None  # resolved per build by default_workers
    assert "6 here" in fv["num_workers"].help
    # The binaries define exactly these flags (not a copy with another default).
    module = __import__(f"pipelines.{binary}", fromlist=["FLAGS"])
    assert module.FLAGS["num_workers"].default is None
    assert "os.sched_getaffinity" in module.FLAGS["num_workers"].help
    with pytest.raises(UsageError, match="--num_workers must be >= 1, got 0"):
        WriteOptions(num_workers=0).validate()


class _RecordsPid(Encoder):
    def encode(self, item):
        return Encoded(b"x", str(item), counters={f"pid{os.getpid()}": 1})


def _pids(results: dict) -> set[int]:
    return {int(k[3:]) for info in results.values() for k in info["counters"]}


def test_write_shards_uses_the_default_worker_count(tmp_path, monkeypatch, caplog):
    # On absl's own logger too: an earlier test on the xdist worker can leave it at WARNING.
    caplog.set_level(logging.INFO, logger="absl")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    specs = [ShardSpec("t", i, 4, str(tmp_path / f"t-{i}"), [f"a{i}", f"b{i}"]) for i in range(4)]
    # A tiny build (8 images): written in this process, no pool to start.
    results = write_shards(specs, _RecordsPid(), WriteOptions())
    assert _pids(results) == {os.getpid()}
    assert "1 worker(s) (default: the usable cores)" in caplog.text
    # Large enough per worker: the default becomes the 2 usable cores, in worker processes.
    monkeypatch.setattr(parallelism, "MIN_ITEMS_PER_DEFAULT_WORKER", 1)
    specs = [ShardSpec("u", i, 4, str(tmp_path / f"u-{i}"), [f"a{i}", f"b{i}"]) for i in range(4)]
    results = write_shards(specs, _RecordsPid(), WriteOptions())
    assert "2 worker(s) (default: the usable cores)" in caplog.text
    assert sum(info["records"] for info in results.values()) == 8
    # Worker processes wrote shards (this process may have written some while they started).
    assert 1 <= len(_pids(results) - {os.getpid()}) <= 2


class _FakeResult:
    """An apply_async result that becomes ready after `polls` checks (a worker starting up)."""

    def __init__(self, value, polls):
        self.value, self.polls = value, polls

    def ready(self):
        self.polls -= 1
        return self.polls < 0

    def wait(self, timeout):
        pass

    def get(self):
        return self.value


class _FakePool:
    def __init__(self, start_polls):
        self.start_polls, self.submitted = start_polls, []

    def apply_async(self, fn, args):
        self.submitted.append(args[0])
        # The first jobs wait for the workers' start-up; later ones are ready at once.
        return _FakeResult(
            fn(args[0]) | {"by": "pool"}, self.start_polls if len(self.submitted) <= 2 else 0
        )


def test_the_caller_writes_shards_until_the_pool_is_up():
    inits = []
    pool = _FakePool(start_polls=6)
    got = list(
        pool_drain.drain(
            pool, list(range(8)), 2, lambda j: {"job": j, "by": "caller"}, lambda: inits.append(1)
        )
    )
    by = {r["job"]: r["by"] for r in got}
    assert sorted(by) == list(range(8))  # every job exactly once
    # Jobs 0-1 wait in the pool while this process writes the next ones; after the pool's first
    # result it only feeds the pool (2 in flight), and the caller initialised itself once.
    caller = [j for j, b in by.items() if b == "caller"]
    assert caller and caller == list(range(2, 2 + len(caller))) and inits == [1]
    assert pool.submitted[:2] == [0, 1] and set(pool.submitted) | set(caller) == set(range(8))
    # A pool that is up at once: the caller writes nothing.
    assert all(
        r["by"] == "pool"
        for r in pool_drain.drain(_FakePool(0), [0, 1, 2], 2, lambda j: {"job": j}, list)
    )
