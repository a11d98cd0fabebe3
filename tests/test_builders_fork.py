"""Builder workers fork from the caller when that is safe (local paths, no threads of its own
since the builders' import), else come from the forkserver (`worker_start.start_method`)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from test_builders_rawdata import make_coco

from transfer_tf.data.builders import pool_drain, worker_start

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fresh interpreter, as a builder binary runs: import the builders, build COCO shards with 2
# workers and with 1, then run one TensorFlow op and ask the rule again.
_SCRIPT = r"""
import json, sys
from absl import logging
from transfer_tf.data.builders import WriteOptions, build_coco, worker_start
logging.set_verbosity(logging.INFO)
raw, out = sys.argv[1], sys.argv[2]
paths = [raw + "/images", raw + "/instances.json", out]
result = {"after_import": worker_start.THREADS_AFTER_IMPORT}
for workers, name in ((2, "w2"), (1, "w1"), (2, "w2again")):
    build_coco([raw + "/images"], raw + "/instances.json", f"{out}/{name}/train", num_shards=3,
               include_masks=True, options=WriteOptions(num_workers=workers))
    result[f"after_{name}"] = worker_start.start_method(paths)
import tensorflow as tf
tf.constant(1.0) + 1.0
result["after_op"] = worker_start.start_method(paths)
result["threads_after_op"] = worker_start.thread_count()
print("RESULT " + json.dumps(result))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter with this repository importable, as a user runs a binary; must exit 0."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def fresh_process_builds(tmp_path_factory):
    """What the script above printed and logged (one TensorFlow import for the tests below)."""
    root = tmp_path_factory.mktemp("fork")
    make_coco(str(root / "coco"))
    proc = _python("-c", _SCRIPT, str(root / "coco"), str(root / "out"))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]), proc.stderr, root / "out"


@pytest.mark.slow
def test_a_local_build_forks_and_writes_the_same_shards_as_one_worker(fresh_process_builds):
    result, log, out = fresh_process_builds
    # Both 2-worker builds forked (the first one's pool left no thread behind), said why at INFO.
    starts = [x for x in log.splitlines() if "workers start by" in x]
    assert len(starts) == 2 and all("workers start by fork: local paths" in x for x in starts)
    assert result["after_w2"][0] == "fork" and result["after_w2again"][0] == "fork"
    # Record for record, byte for byte, in the same order as the in-process build.
    one = sorted(glob.glob(str(out / "w1" / "train-*.tfrecord")))
    assert len(one) == 3
    for name in ("w2", "w2again"):
        two = sorted(glob.glob(str(out / name / "train-*.tfrecord")))
        assert [os.path.basename(p) for p in two] == [os.path.basename(p) for p in one]
        for a, b in zip(one, two, strict=True):
            assert open(a, "rb").read() == open(b, "rb").read(), (a, b)


@pytest.mark.slow
def test_a_process_that_ran_a_tensorflow_op_uses_the_forkserver(fresh_process_builds):
    result = fresh_process_builds[0]
    assert result["threads_after_op"] > result["after_import"]
    method, why = result["after_op"]
    assert method == "forkserver"
    assert f"runs {result['threads_after_op']} threads, {result['after_import']} after" in why


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


def test_builders_imported_after_a_tensorflow_op_never_fork():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # its thread pools would be in a count taken now
    assert worker_start._threads_after_import() is None


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


def test_the_coco_binary_forks_its_workers_on_local_paths(tmp_path):
    # The binary's start-up (absl's init callbacks) creates TensorFlow's eager context object
    # before any op runs; an uninitialized context has no thread pool and must not block a fork.
    make_coco(str(tmp_path / "coco"))
    proc = _python(
        "-m",
        "pipelines.make_coco_tfrecords",
        f"--image_dir={tmp_path}/coco/images",
        f"--object_annotations_file={tmp_path}/coco/instances.json",
        f"--output_file_prefix={tmp_path}/out/train",
        "--num_shards=2",
        "--num_workers=2",
    )
    assert "workers start by fork:" in proc.stderr, proc.stderr[-3000:]
    assert len(glob.glob(f"{tmp_path}/out/train-*")) == 2
