"""Corrupt-data handling for the input pipeline: name the shard, or skip and count.

tf.data has no try/except, so failures are turned into gaps and checked in the graph:

* `read_shard`: a shard whose TFRecord framing breaks (bad CRC, truncated file) ends early under
  `ignore_errors`; an end marker compares the bytes consumed with the file size.
* `guarded_map`: records are processed in chunks of 16, each chunk a small dataset with
  `ignore_errors`; a scan over the survivors finds the missing positions while the chunk's shard
  names and record indices are at hand. (One dataset per record would cost more than a decode.)

Strict mode fails with `transfer_tf corrupt data: ... shard PATH` (`corrupt_data_error` turns
that into a one-line UsageError); skip mode logs each skipped record and counts it
(`skipped_records()`; counted in-process only: tf.data service workers just log).
"""

from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf
from absl import logging

from transfer_tf.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE
CORRUPT_PREFIX = "transfer_tf corrupt data:"
# TFRecord framing: u64 length, u32 length CRC, payload, u32 payload CRC.
_RECORD_OVERHEAD = 16

_skip_lock = threading.Lock()
_skipped = 0


def skipped_records() -> int:
    """Number of corrupt records (or broken shard tails) skipped in this process so far."""
    return _skipped


def _count_skip(shard: bytes, index: np.int64) -> np.int64:
    global _skipped
    with _skip_lock:
        _skipped += 1
        total = _skipped
    name = shard.decode("utf-8", "replace")
    if index < 0:
        logging.warning("skipped the broken tail of shard %s (%d skipped so far)", name, total)
    else:
        logging.warning(
            "skipped corrupt record %d of shard %s (%d skipped so far)", index, name, total
        )
    return np.int64(total)


def corrupt_data_error(error: BaseException) -> UsageError | None:
    """Turns the pipeline's corrupt-data failure into a one-line UsageError (else None).

    Binaries wrap their loops: `except tf.errors.OpError as e: raise corrupt_data_error(e) or e`.
    """
    message = getattr(error, "message", str(error))
    if CORRUPT_PREFIX not in message:
        return None
    text = message[message.index(CORRUPT_PREFIX) :].splitlines()[0]
    for junk in ("[", "]", "\\n"):
        text = text.replace(junk, "")
    return UsageError(text.strip() + " (set data.skip_corrupt=true to skip such records)")


def read_shard(shard: tf.Tensor, size: tf.Tensor, epoch: tf.Tensor, skip: bool, log_py: bool):
    """One shard -> (shard, index, epoch, record); a shard cut short by bad framing is reported."""
    raw = tf.data.TFRecordDataset(shard).ignore_errors()
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
        if skip:
            counted = tf.cond(
                complete,
                lambda: tf.constant(0, tf.int64),
                lambda: _skip_hook(shard, tf.constant(-1, tf.int64), log_py),
            )
            with tf.control_dependencies([counted]):
                return tf.logical_not(is_end)
        assert_op = tf.debugging.Assert(
            complete,
            [
                f"{CORRUPT_PREFIX} truncated or corrupt TFRecord framing after record",
                index,
                "in shard",
                shard,
            ],
        )
        with tf.control_dependencies([assert_op]):
            return tf.logical_not(is_end)

    scanned = tagged.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), count)
    return scanned.filter(check_end).map(
        lambda index, record, is_end, consumed: (shard, index, epoch, record)
    )


def _skip_hook(shard: tf.Tensor, index: tf.Tensor, log_py: bool) -> tf.Tensor:
    if log_py:
        return tf.numpy_function(_count_skip, [shard, index], tf.int64, stateful=True)
    # No Python in the graph (tf.data service workers): log from the graph, count nothing.
    with tf.control_dependencies([tf.print("skipped corrupt record", index, "of shard", shard)]):
        return tf.constant(0, tf.int64)


_CHUNK = 16


def guarded_map(ds, process, dummy, skip: bool, log_py: bool, deterministic: bool, parallel: int):
    """`ds.map(process)` that names the shard and record of any element whose processing fails.

    tf.data has no try/except. Elements are grouped in chunks of 16; each chunk is processed as
    its own small dataset with `ignore_errors`, its survivors carry their position in the chunk,
    and a scan over them finds the gaps (failed elements) while the chunk's shard names and
    record indices are still at hand. Chunks run in parallel through `interleave`. (One dataset
    per element would cost more than a JPEG decode; per chunk the overhead is amortised.)
    """

    def one_chunk(shards, indices, epochs, payloads):
        n = tf.shape(shards, out_type=tf.int64)[0]
        elements = tf.data.Dataset.from_tensor_slices(
            (shards, indices, epochs, payloads, tf.range(n))
        )
        done = elements.map(lambda s, i, e, p, j: (process(s, i, e, p), j, False))
        done = done.ignore_errors().concatenate(tf.data.Dataset.from_tensors((dummy, n, True)))

        def check(expected, element):
            out, j, is_end = element
            failed = tf.range(expected, j)
            if skip:
                counted = tf.map_fn(
                    lambda k: _skip_hook(shards[k], indices[k], log_py),
                    failed,
                    fn_output_signature=tf.int64,
                )
                deps = [counted]
            else:
                first = tf.minimum(expected, n - 1)
                deps = [
                    tf.debugging.Assert(
                        tf.equal(j, expected),
                        [
                            f"{CORRUPT_PREFIX} cannot parse/decode record",
                            indices[first],
                            "of shard",
                            shards[first],
                        ],
                    )
                ]
            with tf.control_dependencies(deps):
                return j + 1, (out, tf.identity(is_end))

        checked = done.scan(tf.constant(0, tf.int64), check)
        return checked.filter(lambda out, is_end: tf.logical_not(is_end)).map(
            lambda out, is_end: out
        )

    # ragged: TFDS payloads hold per-image object lists of different lengths.
    return ds.ragged_batch(_CHUNK).interleave(
        one_chunk,
        cycle_length=parallel if parallel > 0 else AUTOTUNE,
        block_length=1,
        num_parallel_calls=parallel if parallel > 0 else AUTOTUNE,
        deterministic=deterministic,
    )
