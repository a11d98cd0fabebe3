"""Skip mode of the input pipeline (`data.on_corrupt_record: skip`): skip, count, log per epoch.

Strict mode (`error`, guard.py) costs nothing per record; skip mode needs per-record bookkeeping
and pays for it (~10-25% throughput):

* `read_shard`: a shard whose TFRecord framing breaks (bytes overwritten: a bad CRC; a cut file)
  cannot be read past the break (the length fields after it cannot be trusted). It ends there
  under `ignore_errors`; an end marker compares the bytes consumed with the file size, and the
  records lost (from the broken one to the end: the builders' manifest says how many) are
  logged with the shard, the record index and the byte offset, and counted.
* `guarded_map`: records are processed in chunks of 16, each chunk a small dataset with
  `ignore_errors`; a scan over the survivors finds the missing positions while the chunk's shard
  names and record indices are at hand. (One dataset per record would cost more than a decode.)

Never silently fewer examples: every skipped record is logged and counted (`skipped_records()`),
and each pipeline's *ledger* (`new_ledger`) sums, per input epoch, the records accounted for
(passed, failed or lost) and the skipped ones per shard; when an epoch is complete it logs
`input epoch E of PATTERN: skipped N of M records as corrupt (...): shard: n, ...` (or that none
were). tf.data service workers have no Python in the graph: they print each skip, count nothing.

Example:
    ledger = new_ledger("/data/train-*")
    size_ledger(ledger, epoch_size=1_281_167, start=0)
    ds = guarded_map(ds, process, dummy, log_py=True, deterministic=False, parallel=8,
                     ledger=ledger)
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import threading

import numpy as np
import tensorflow as tf
from absl import logging

_RECORD_OVERHEAD = 16  # TFRecord framing: u64 length, u32 length CRC, payload, u32 payload CRC
_POLICY = "data.on_corrupt_record=skip"
_SHARDS_NAMED = 20  # per epoch summary line

_lock = threading.Lock()
_skipped = 0


def skipped_records() -> int:
    """Number of corrupt records skipped in this process so far (a broken shard's lost records
    count one each; one when no manifest says how many)."""
    return _skipped


@dataclasses.dataclass
class _Ledger:
    source: str
    epoch_size: int
    first_epoch: int
    first_offset: int  # records of the first epoch before the stream's start (never read)
    processed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: dict = dataclasses.field(default_factory=dict)  # epoch -> Counter(shard -> n)
    reported: set = dataclasses.field(default_factory=set)

    def expected(self, epoch: int) -> int:
        return self.epoch_size - (self.first_offset if epoch == self.first_epoch else 0)


_ledgers: collections.OrderedDict[int, _Ledger] = collections.OrderedDict()
_next_ledger = itertools.count()
_MAX_LEDGERS = 64


def new_ledger(source: str) -> int:
    """Registers the per-epoch skip counts of one skip-mode pipeline (`source`: its data pattern,
    named in the summaries); returns its id. Give it its epoch size with `size_ledger` before the
    dataset is iterated."""
    with _lock:
        number = next(_next_ledger)
        _ledgers[number] = _Ledger(source, 0, 0, 0)
        while len(_ledgers) > _MAX_LEDGERS:
            _ledgers.popitem(last=False)
    return number


def size_ledger(ledger: int, epoch_size: int, start: int) -> None:
    """Sets the records per epoch of ledger `ledger` (the builders' manifest counts, lost records
    included; else what a counting pass could read) and the stream's first record (`start`)."""
    first_epoch, offset = divmod(start, epoch_size) if epoch_size > 0 else (0, 0)
    with _lock:
        found = _ledgers.get(ledger)
        if found is not None:
            found.epoch_size, found.first_epoch, found.first_offset = (
                epoch_size,
                first_epoch,
                offset,
            )


def _maybe_report(ledger: _Ledger, epoch: int) -> None:
    """Logs epoch `epoch`'s summary once every record of it is accounted for (caller locks)."""
    expected = ledger.expected(epoch)
    if epoch in ledger.reported or ledger.processed[epoch] < expected or expected <= 0:
        return
    ledger.reported.add(epoch)
    del ledger.processed[epoch]
    counts = ledger.skipped.pop(epoch, collections.Counter())
    total = sum(counts.values())
    if not total:
        logging.info("input epoch %d of %s: no corrupt records", epoch, ledger.source)
        return
    ordered = sorted(counts.items())
    shards = ", ".join(f"{os.path.basename(s)}: {n}" for s, n in ordered[:_SHARDS_NAMED])
    more = len(ordered) - _SHARDS_NAMED
    logging.warning(
        "input epoch %d of %s: skipped %d of %d records as corrupt (%s): %s%s",
        epoch,
        ledger.source,
        total,
        expected,
        _POLICY,
        shards,
        f", and {more} more shard(s)" if more > 0 else "",
    )


def _note_skip(ledger_id, shard, index, epoch, lost, offset, size) -> np.int64:
    """numpy_function: one skipped record (`offset` < 0) or a broken shard's lost rest."""
    global _skipped
    name = shard.decode("utf-8", "replace")
    count = int(lost) if lost > 0 else 1
    with _lock:
        _skipped += count
        total = _skipped
        ledger = _ledgers.get(int(ledger_id))
        if ledger is not None:
            per_shard = ledger.skipped.setdefault(int(epoch), collections.Counter())
            per_shard[name] += count
            if offset >= 0 and lost > 0:  # read-time loss: these records never reach the map
                ledger.processed[int(epoch)] += int(lost)
                _maybe_report(ledger, int(epoch))
    if offset >= 0:
        what = (
            f"{lost} record(s)" if lost >= 0 else "the records (no builder manifest says how many)"
        )
        logging.warning(
            "skipped %s from record %d of shard %s on: its TFRecord framing breaks at byte "
            "offset %d of %d (%s; %d skipped so far)",
            what,
            index,
            name,
            offset,
            size,
            _POLICY,
            total,
        )
    else:
        logging.warning(
            "skipped corrupt record %d of shard %s (%s; %d skipped so far)",
            index,
            name,
            _POLICY,
            total,
        )
    return np.int64(total)


def _note_chunk(ledger_id, epochs) -> np.int64:
    """numpy_function: a chunk of `guarded_map` is done; its records count as accounted for."""
    with _lock:
        ledger = _ledgers.get(int(ledger_id))
        if ledger is not None:
            for epoch, n in collections.Counter(int(e) for e in epochs).items():
                ledger.processed[epoch] += n
                _maybe_report(ledger, epoch)
    return np.int64(0)


def _skip_hook(ledger, shard, index, epoch, lost, offset, size, log_py: bool) -> tf.Tensor:
    if log_py:
        args = [tf.constant(ledger, tf.int64), shard, index, epoch, lost, offset, size]
        return tf.numpy_function(_note_skip, args, tf.int64, stateful=True)
    # No Python in the graph (tf.data service workers): log from the graph, count nothing.
    with tf.control_dependencies(
        [tf.print("skipped corrupt record", index, "of shard", shard, "at byte offset", offset)]
    ):
        return tf.constant(0, tf.int64)


def read_shard(
    shard: tf.Tensor,
    size: tf.Tensor,
    expected: tf.Tensor,
    epoch: tf.Tensor,
    log_py: bool,
    ledger: int = -1,
    buffer_size: int | None = None,
):
    """One shard -> (shard, index, epoch, record); the unreadable rest of a shard whose framing
    breaks is logged and counted. `expected`: the shard's record count from the builders'
    manifest (-1: unknown). `buffer_size`: the TFRecordDataset read buffer in bytes (None:
    TensorFlow's default)."""
    raw = tf.data.TFRecordDataset(shard, buffer_size=buffer_size).ignore_errors()
    tagged = raw.map(lambda r: (r, False)).concatenate(
        tf.data.Dataset.from_tensors((tf.constant(b""), True))
    )

    def count(state, element):
        index, consumed = state
        record, is_end = element
        new = (
            index + 1,
            consumed + tf.cast(tf.strings.length(record), tf.int64) + _RECORD_OVERHEAD,
        )
        return new, (index, record, is_end, consumed)

    def check_end(index, record, is_end, consumed):
        complete = tf.logical_or(tf.logical_not(is_end), tf.equal(consumed, size))
        lost = tf.where(expected >= 0, tf.maximum(expected - index, 0), -1)
        counted = tf.cond(
            complete,
            lambda: tf.constant(0, tf.int64),
            lambda: _skip_hook(ledger, shard, index, epoch, lost, consumed, size, log_py),
        )
        with tf.control_dependencies([counted]):
            return tf.logical_not(is_end)

    scanned = tagged.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), count)
    return scanned.filter(check_end).map(
        lambda index, record, is_end, consumed: (shard, index, epoch, record)
    )


_CHUNK = 16


def guarded_map(ds, process, dummy, log_py: bool, deterministic: bool, parallel: int, ledger=-1):
    """`ds.map(process)` over `(shard, index, epoch, payload)` elements that skips, logs and
    counts any element whose processing fails (naming its shard and record), and accounts each
    chunk's records to `ledger` (`new_ledger`; -1: none) for the per-epoch summaries.

    tf.data has no try/except. Elements are grouped in chunks of 16; each chunk is processed as
    its own small dataset with `ignore_errors`, its survivors carry their position in the chunk,
    and a scan over them finds the gaps (failed elements) while the chunk's shard names and
    record indices are still at hand. Chunks run in parallel through `interleave`. (One dataset
    per element would cost more than a JPEG decode; per chunk the overhead is amortised.)
    """
    no_offset = tf.constant(-1, tf.int64)

    def one_chunk(shards, indices, epochs, payloads):
        n = tf.shape(shards, out_type=tf.int64)[0]
        elements = tf.data.Dataset.from_tensor_slices(
            (shards, indices, epochs, payloads, tf.range(n))
        )
        done = elements.map(lambda s, i, e, p, j: (process(s, i, e, p), j, False))
        done = done.ignore_errors().concatenate(tf.data.Dataset.from_tensors((dummy, n, True)))

        def check(expected, element):
            out, j, is_end = element
            counted = tf.map_fn(
                lambda k: _skip_hook(
                    ledger,
                    shards[k],
                    indices[k],
                    epochs[k],
                    no_offset,
                    no_offset,
                    no_offset,
                    log_py,
                ),
                tf.range(expected, j),  # the elements that failed since the last survivor
                fn_output_signature=tf.int64,
            )
            deps = [counted]
            if log_py and ledger >= 0:
                with tf.control_dependencies([counted]):  # after the chunk's skips are noted
                    deps.append(
                        tf.cond(
                            is_end,
                            lambda: tf.numpy_function(
                                _note_chunk,
                                [tf.constant(ledger, tf.int64), epochs],
                                tf.int64,
                                stateful=True,
                            ),
                            lambda: tf.constant(0, tf.int64),
                        )
                    )
            with tf.control_dependencies(deps):
                return j + 1, (out, tf.identity(is_end))

        checked = done.scan(tf.constant(0, tf.int64), check)
        return checked.filter(lambda out, is_end: tf.logical_not(is_end)).map(
            lambda out, is_end: out
        )

    # ragged: TFDS payloads hold per-image object lists of different lengths. A chunk's
    # survivors leave as one block: the stream keeps its order (chunks still run in parallel).
    return ds.ragged_batch(_CHUNK).interleave(
        one_chunk,
        cycle_length=parallel,
        block_length=_CHUNK,
        num_parallel_calls=parallel,
        deterministic=deterministic,
    )
