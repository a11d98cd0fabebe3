"""The engine every builder shares: plan -> shards, written in parallel, atomically, resumably.

A builder turns its raw input into a *plan*: a list of `ShardSpec`s, each naming its output file
and the items (small JSON-able descriptors such as a path and a label) it holds, in record order.
The plan is a pure function of the inputs and the seed, so an interrupted run and an
uninterrupted one write the same bytes.

`write_shards` then, for the shards of this task (`task_index`/`num_tasks`):
  * skips shards that are already finished: the final file exists, its sidecar
    `.build/done/<name>.json` exists, carries the same fingerprint (a hash of the items and the
    encoder options) and records the file's current size;
  * encodes the others in `num_workers` processes (forked from the caller when every path is
    local and it has started no threads, else from a forkserver: `worker_start.start_method`),
    one shard at a time per process, streaming
    (one Example in memory at a time), into `.build/tmp/<name>.tmp-<pid>`, then renames the file
    into place and writes its sidecar last: a file without a sidecar is redone.
  * on a write error (a full disk, a file-size limit) removes the shard's partial file and
    raises a one-line `WriteError` naming the path and the OS reason; the other workers' partial
    files are removed too. Finished shards stay, so the rerun resumes at the first unfinished one.

Example:
    specs = [ShardSpec("train", 0, 1, "/out/train-00000-of-00001", [{"path": "a.jpg"}])]
    results = write_shards(specs, MyEncoder(), WriteOptions(num_workers=2))
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf
from absl import logging

from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.data.builders.parallelism import default_workers
from transfer_tf.data.builders.pool_drain import drain
from transfer_tf.data.builders.progress import LocalCounter, Progress
from transfer_tf.data.builders.worker_start import pool_context, start_method
from transfer_tf.data.builders.write_errors import (
    WRITE_ERRORS,
    WriteError,
    remove_quietly,
    writing,
)
from transfer_tf.errors import UsageError

BUILD_DIR = ".build"


@dataclass(frozen=True)
class ShardSpec:
    """One output shard: where it goes and the items it holds, in record order."""

    split: str
    index: int
    num_shards: int
    path: str
    items: Sequence[Any]

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass
class Encoded:
    """What an encoder made of one item.

    Attributes:
      record: the serialized `tf.train.Example`, or None when the item is skipped.
      source: the item's file name, for reports.
      skip_reason: why it was skipped ("" when written).
      fixed: what was converted to make it writable (e.g. "CMYK JPEG"), "" if nothing.
      classes: class keys this record counts towards (per-class counts in the manifest).
      counters: other per-item counts (e.g. dropped boxes), summed into the manifest.
    """

    record: bytes | None
    source: str
    skip_reason: str = ""
    fixed: str = ""
    classes: Sequence[str] = ()
    counters: dict[str, int] = field(default_factory=dict)


class Encoder:
    """Turns one plan item into an `Encoded`. Subclasses must be picklable (sent to workers)."""

    def options(self) -> dict[str, Any]:
        """JSON-able settings that change the output bytes (part of each shard's fingerprint)."""
        return {}

    def encode(self, item: Any) -> Encoded:
        raise NotImplementedError


@dataclass(frozen=True)
class WriteOptions:
    """How to run: parallelism, which shards are ours, and logging cadence.

    `num_workers` None (the default): the usable cores (`parallelism.default_workers`).
    """

    num_workers: int | None = None
    task_index: int = 0
    num_tasks: int = 1
    log_every_s: float = 10.0

    def validate(self) -> None:
        if self.num_workers is not None and self.num_workers < 1:
            raise UsageError(f"--num_workers must be >= 1, got {self.num_workers}")
        if self.num_tasks < 1:
            raise UsageError(f"--num_tasks must be >= 1, got {self.num_tasks}")
        if not 0 <= self.task_index < self.num_tasks:
            raise UsageError(
                f"--task_index must be in [0, {self.num_tasks}), got {self.task_index}"
            )


def shard_name(prefix: str, index: int, num_shards: int, suffix: str = "") -> str:
    """`train-00003-of-01024` (ImageNet style) or with suffix `.tfrecord` (COCO style)."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}"


def contiguous_chunks(items: Sequence[Any], num_shards: int) -> list[list[Any]]:
    """Splits into `num_shards` consecutive runs whose sizes differ by at most one."""
    if num_shards < 1:
        raise UsageError(f"number of shards must be >= 1, got {num_shards}")
    base, extra = divmod(len(items), num_shards)
    out, start = [], 0
    for i in range(num_shards):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def round_robin(items: Sequence[Any], num_shards: int) -> list[list[Any]]:
    """Item i goes to shard i % num_shards (Model Garden's COCO tool assigns records this way)."""
    if num_shards < 1:
        raise UsageError(f"number of shards must be >= 1, got {num_shards}")
    return [list(items[i::num_shards]) for i in range(num_shards)]


def task_shards(specs: Sequence[ShardSpec], task_index: int, num_tasks: int) -> list[ShardSpec]:
    """The shards task `task_index` of `num_tasks` builds: every num_tasks-th in plan order."""
    return [s for i, s in enumerate(specs) if i % num_tasks == task_index]


def fingerprint(spec: ShardSpec, encoder: Encoder) -> str:
    """Hash of everything that determines the shard's bytes."""
    from transfer_tf.data.schemas import SCHEMA_VERSION

    payload = {
        "schema_version": SCHEMA_VERSION,
        "encoder": type(encoder).__name__,
        "options": encoder.options(),
        "name": spec.name,
        "items": list(spec.items),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _build_dir(spec: ShardSpec, sub: str) -> str:
    return os.path.join(os.path.dirname(spec.path), BUILD_DIR, sub)


def sidecar_path(spec: ShardSpec) -> str:
    return os.path.join(_build_dir(spec, "done"), spec.name + ".json")


def read_finished(spec: ShardSpec, fp: str) -> dict | None:
    """The shard's sidecar if the shard is finished and matches `fp`, else None (cheap checks)."""
    path = sidecar_path(spec)
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            info = json.load(f)
        size = tf.io.gfile.stat(spec.path).length
    except (tf.errors.NotFoundError, json.JSONDecodeError, OSError):
        return None
    if info.get("fingerprint") != fp or info.get("bytes") != size:
        return None
    return info


# ---------------------------------------------------------------------------------------------
# Writing one shard (runs in a worker process, or in-process with one worker).
# ---------------------------------------------------------------------------------------------

_worker_encoder: Encoder | None = None
_worker_counter: Any = None


def _init_worker(encoder: Encoder, counter: Any) -> None:
    global _worker_encoder, _worker_counter
    _worker_encoder = encoder
    _worker_counter = counter


def _bump(counter: Any, n: int) -> None:
    with counter.get_lock():
        counter.value += n


def _write_one(job: tuple[ShardSpec, str]) -> dict:
    spec, fp = job
    tmp = os.path.join(_build_dir(spec, "tmp"), f"{spec.name}.tmp-{os.getpid()}")
    try:
        return _write_shard(spec, fp, tmp)
    except BaseException as e:
        # Whatever stopped the shard (a full disk, a bug, Ctrl-C), its files go: the partial
        # one, and the renamed one when its sidecar could not be written (unfinished either
        # way). Only finished shards stay on disk; a rerun redoes this one.
        remove_quietly(tmp)
        remove_quietly(spec.path)
        if isinstance(e, WriteError):
            raise WriteError(
                spec.path,
                f"{e.reason} (its partial file was removed; free space and rerun: finished "
                "shards are kept)",
            ) from None
        raise


def _write_shard(spec: ShardSpec, fp: str, tmp: str) -> dict:
    encoder, counter = _worker_encoder, _worker_counter
    assert encoder is not None
    per_class: Counter[str] = Counter()
    counters: Counter[str] = Counter()
    skipped, fixed = [], []
    records = 0
    pending = 0
    with writing(tmp):
        writer = tf.io.TFRecordWriter(tmp)
    try:
        for item in spec.items:
            enc = encoder.encode(item)  # its own errors are not write errors: not wrapped
            if enc.record is None:
                skipped.append({"file": enc.source, "reason": enc.skip_reason})
            else:
                with writing(tmp):
                    writer.write(enc.record)
                records += 1
                per_class.update(enc.classes)
                if enc.fixed:
                    fixed.append({"file": enc.source, "converted": enc.fixed})
            counters.update(enc.counters)
            pending += 1
            if pending >= 16:
                _bump(counter, pending)
                pending = 0
        with writing(tmp):  # buffered records reach the disk here
            writer.close()
    finally:
        # After a failure, release the file quietly: a second error from flushing the same
        # full disk must not replace the first (closing a closed writer is a no-op).
        with contextlib.suppress(*WRITE_ERRORS):
            writer.close()
    _bump(counter, pending)
    with writing(spec.path):
        tf.io.gfile.rename(tmp, spec.path, overwrite=True)
        size = tf.io.gfile.stat(spec.path).length
    info = {
        "file": spec.name,
        "split": spec.split,
        "fingerprint": fp,
        "bytes": size,
        "records": records,
        "per_class": dict(sorted(per_class.items())),
        "counters": dict(sorted(counters.items())),
        "skipped": skipped,
        "converted": fixed,
    }
    # The sidecar is written last: it is what marks the shard as finished (a shard without one,
    # e.g. after its sidecar hit a full disk, is redone by the next run).
    with writing(sidecar_path(spec)):
        write_json_atomic(sidecar_path(spec), info, indent=1)
    return info


def _clean_stale_temps(specs: Sequence[ShardSpec]) -> None:
    for spec in specs:
        for stale in tf.io.gfile.glob(os.path.join(_build_dir(spec, "tmp"), spec.name + ".tmp-*")):
            remove_quietly(stale)


def write_shards(
    specs: Sequence[ShardSpec],
    encoder: Encoder,
    options: WriteOptions,
    label: str = "build",
    input_paths: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Writes this task's unfinished shards; returns {shard name: sidecar info} for this task.

    Shards already finished by an earlier run (same fingerprint) are kept as they are.
    `input_paths`: every file or folder the build reads (with the shards' paths they decide
    whether workers may fork from this process, `worker_start.start_method`); None: unknown,
    so the workers come from a forkserver.
    """
    options.validate()
    mine = task_shards(specs, options.task_index, options.num_tasks)
    fps = {s.name: fingerprint(s, encoder) for s in mine}
    results: dict[str, dict] = {}
    todo = []
    for spec in mine:
        info = read_finished(spec, fps[spec.name])
        if info is None:
            todo.append(spec)
        else:
            results[spec.name] = info
    if results:
        logging.info("%s: %d finished shard(s) kept from an earlier run", label, len(results))
    for sub in ("tmp", "done"):
        for d in {_build_dir(s, sub) for s in todo}:
            with writing(d):
                tf.io.gfile.makedirs(d)
    _clean_stale_temps(mine)
    total = sum(len(s.items) for s in todo)
    jobs = [(s, fps[s.name]) for s in todo]
    workers = min(options.num_workers or default_workers(total, len(jobs)), max(1, len(jobs)))
    logging.info(
        "%s: writing %d shard(s), %d images, %d worker(s)%s",
        label,
        len(todo),
        total,
        workers,
        "" if options.num_workers else " (default: the usable cores)",
    )
    if workers == 1:
        counter = LocalCounter()
        _init_worker(encoder, counter)
        with Progress(counter, total, label, options.log_every_s):
            for job in jobs:
                info = _write_one(job)
                results[info["file"]] = info
        return results
    paths = None if input_paths is None else [*input_paths, *(s.path for s in specs)]
    method, why = start_method(paths)
    logging.info("%s: workers start by %s: %s", label, method, why)
    ctx = pool_context(method)
    counter = ctx.Value("q", 0)
    try:
        # Forked workers keep this process's pages shared (as forkserver_preload's workers do);
        # once they are forked, this process collects its own objects again.
        freeze = method == "fork" and gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(encoder, counter))
        finally:
            if freeze:
                gc.unfreeze()
        with pool, Progress(counter, total, label, options.log_every_s):
            # A forkserver's pool takes seconds to start: this process writes shards meanwhile
            # (pool_drain). Forked workers are up at once: this process only feeds them.
            local = None if method == "fork" else lambda: _init_worker(encoder, counter)
            for info in drain(pool, jobs, workers, _write_one, local):
                results[info["file"]] = info
    except BaseException:
        # The pool's exit killed the other workers mid-shard: their partial files go too.
        _clean_stale_temps(todo)
        raise
    return results
