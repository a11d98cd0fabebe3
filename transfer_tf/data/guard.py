"""Corrupt-data handling for the input pipeline: name the shard, or skip and count.

Strict mode (the default) costs nothing while the data is good. The hot pipeline is a plain
`TFRecordDataset -> map -> batch`; its map runs under a name scope that carries a pipeline tag
(`transfer_tf_input_N`), which TensorFlow copies into the message of any op that fails there.
`corrupt_data_error(error)` is the post-mortem: for a tagged error it re-reads that pipeline's
shards (in parallel, fully decoding every image, then record by record in the first dirty shard)
and returns a one-line `UsageError` naming the shard and record; for broken TFRecord framing
(`DataLossError: truncated/corrupted record at OFFSET`, which carries no tag) it checks the
framing of the shards of the pipelines built in this process. `cli.run` calls it for every
TensorFlow error that reaches a binary, so a corrupt record stops a job with
`error: transfer_tf corrupt data: cannot parse/decode record N of shard PATH (...)`.

Skip mode (`data.skip_corrupt`) needs per-record bookkeeping, so it pays for it:

* `read_shard`: a shard whose TFRecord framing breaks (bad CRC, truncated file) ends early under
  `ignore_errors`; an end marker compares the bytes consumed with the file size.
* `guarded_map`: records are processed in chunks of 16, each chunk a small dataset with
  `ignore_errors`; a scan over the survivors finds the missing positions while the chunk's shard
  names and record indices are at hand. (One dataset per record would cost more than a decode.)

Each skipped record is logged with its shard and counted (`skipped_records()`; counted in-process
only: tf.data service workers just log).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
import threading
from collections.abc import Callable

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


# -- strict mode: the post-mortem ------------------------------------------------------------

_TAG_PREFIX = "transfer_tf_input_"
_TAG_RE = re.compile(_TAG_PREFIX + r"(\d+)")
_FRAMING_RE = re.compile(r"(?:truncated|corrupted) record at (\d+)")
_MAX_PIPELINES = 64
_SKIP_HINT = " (set data.skip_corrupt=true to skip such records)"


@dataclasses.dataclass(frozen=True)
class _Pipeline:
    source: str  # the data pattern, for messages
    files: tuple[str, ...]  # empty: not TFRecord files (TFDS)
    check: Callable[[tf.Tensor], tf.Tensor] | None  # serialized record -> fails like the pipeline


_pipelines: collections.OrderedDict[int, _Pipeline] = collections.OrderedDict()
_next_id = itertools.count()
_registry_lock = threading.Lock()


def register_pipeline(
    source: str, files: list[str], check: Callable[[tf.Tensor], tf.Tensor] | None
) -> str:
    """Remembers a strict-mode pipeline for the post-mortem; returns its name-scope tag.

    Args:
      source: the data pattern (named in messages); files: its TFRecord files (empty for TFDS).
      check: serialized record -> tensor; must fail on every record the pipeline's map can fail
        on, whatever the random crop (parse, label checks, full image decode).
    The pipeline's map must run under `tf.name_scope(tag)` so that failing ops carry the tag.
    """
    with _registry_lock:
        number = next(_next_id)
        _pipelines[number] = _Pipeline(source, tuple(files), check)
        while len(_pipelines) > _MAX_PIPELINES:
            _pipelines.popitem(last=False)
    return f"{_TAG_PREFIX}{number}"


def _first_line(message: str) -> str:
    """The reason in a TensorFlow error message, without node/function decorations."""
    text = re.sub(r"\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\].*", " ", message)
    text = re.sub(r"Error in user-defined function passed to .* with iterator: \S+: ", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    skip = ("Graph execution error", "Detected at node", "File ", "<stack traces")
    lines = [line for line in lines if not line.startswith(skip)]
    return " ".join(lines[0].split()) if lines else "unknown error"


def _consumed(check):
    # Reduce to the values: a result that is never used (or only its static size) would let
    # the decode be pruned from the graph.
    return lambda record: tf.reduce_sum(tf.cast(check(record), tf.int64))


def _file_summaries(files: tuple[str, ...], check) -> tf.data.Dataset:
    """Per file, in order: (records framed, records passing `check`, bytes framed) computed in
    C++ with ignore_errors (files in parallel), so a clean multi-TB dataset is scanned at decode
    speed without a Python step per record."""

    def summary(path):
        framed = tf.data.TFRecordDataset(path).ignore_errors()
        count, consumed = framed.reduce(
            (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
            lambda s, r: (s[0] + 1, s[1] + tf.cast(tf.strings.length(r), tf.int64) + 16),
        )
        good = count
        if check is not None:
            passed = framed.map(_consumed(check)).ignore_errors()
            good = passed.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
        return count, good, consumed

    ds = tf.data.Dataset.from_tensor_slices(list(files))
    return ds.map(summary, num_parallel_calls=AUTOTUNE, deterministic=True)


def _first_bad_record(path: str, check) -> tuple[int, str] | None:
    """(index, reason) of the first record of `path` that fails `check` (or breaks framing)."""
    records = tf.data.TFRecordDataset(path)
    if check is not None:
        records = records.map(_consumed(check))
    iterator, index = iter(records), 0
    while True:
        try:
            next(iterator)
        except StopIteration:
            return None
        except tf.errors.DataLossError as e:
            return index, "framing: " + _first_line(e.message)
        except tf.errors.OpError as e:  # the record itself; iteration can go on
            return index, _first_line(e.message)
        index += 1


def _scan(pipeline: _Pipeline, framing_offset: int | None) -> str | None:
    """The corrupt-data message for the first bad shard of `pipeline`, or None if all are clean."""
    check = None if framing_offset is not None else pipeline.check
    sizes = [tf.io.gfile.stat(f).length for f in pipeline.files]
    summaries = _file_summaries(pipeline.files, check)
    for path, size, (count, good, consumed) in zip(pipeline.files, sizes, summaries, strict=True):
        count, good, consumed = int(count), int(good), int(consumed)
        broken_framing = consumed != size
        if framing_offset is not None and not (broken_framing and consumed == framing_offset):
            continue
        if good < count:
            found = _first_bad_record(path, check)
            if found is not None and not found[1].startswith("framing: "):
                index, reason = found
                return (
                    f"{CORRUPT_PREFIX} cannot parse/decode record {index} of shard {path} "
                    f"({reason})"
                )
        if broken_framing:
            return (
                f"{CORRUPT_PREFIX} truncated or corrupt TFRecord framing after record {count} "
                f"in shard {path} (byte {consumed} of {size})"
            )
    return None


def corrupt_data_error(error: BaseException) -> UsageError | None:
    """Names the corrupt shard and record behind an input pipeline failure (post-mortem).

    Returns a one-line UsageError `transfer_tf corrupt data: ... shard PATH (reason)` when
    `error` (usually a `tf.errors.InvalidArgumentError` or `DataLossError` from iterating a
    dataset of `build_dataset`) comes from bad data, else None. For a failure inside a strict-mode
    pipeline's map this re-reads that pipeline's shards, decoding every image (minutes for
    ImageNet on a few cores; it runs only after a failure); for broken TFRecord framing it reads
    the framing of the shards of the pipelines built in this process.

    Example:
        try:
            train(...)
        except tf.errors.OpError as e:
            raise corrupt_data_error(e) or e
    """
    message = getattr(error, "message", None) or str(error)
    if CORRUPT_PREFIX in message:  # skip mode's read_shard/guarded_map, or an earlier call
        text = message[message.index(CORRUPT_PREFIX) :].splitlines()[0]
        for junk in ("[", "]", "\\n"):
            text = text.replace(junk, "")
        return UsageError(text.strip() + _SKIP_HINT)
    tag = _TAG_RE.search(message)
    framing = _FRAMING_RE.search(message)
    with _registry_lock:
        if tag:
            found = _pipelines.get(int(tag.group(1)))
            candidates = [found] if found is not None else []
        elif framing:
            candidates = list(reversed(_pipelines.values()))
        else:
            return None
    for pipeline in candidates:
        if not pipeline.files:  # TFDS: no shards of ours to re-read
            return UsageError(
                f"{CORRUPT_PREFIX} a record of {pipeline.source} cannot be parsed/decoded "
                f"({_first_line(message)})" + _SKIP_HINT
            )
        logging.info(
            "input pipeline failed (%s); scanning %d shard(s) of %s for the corrupt record",
            _first_line(message),
            len(pipeline.files),
            pipeline.source,
        )
        text = _scan(pipeline, int(framing.group(1)) if framing and not tag else None)
        if text is not None:
            return UsageError(text + _SKIP_HINT)
    return None


# -- skip mode: per-record bookkeeping ----------------------------------------------------------


def read_shard(
    shard: tf.Tensor,
    size: tf.Tensor,
    epoch: tf.Tensor,
    skip: bool,
    log_py: bool,
    buffer_size: int | None = None,
):
    """One shard -> (shard, index, epoch, record); a shard cut short by bad framing is reported.
    `buffer_size`: the TFRecordDataset read buffer in bytes (None: TensorFlow's default)."""
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

    # ragged: TFDS payloads hold per-image object lists of different lengths. A chunk's
    # survivors leave as one block: the stream keeps its order (chunks still run in parallel).
    return ds.ragged_batch(_CHUNK).interleave(
        one_chunk,
        cycle_length=parallel,
        block_length=_CHUNK,
        num_parallel_calls=parallel,
        deterministic=deterministic,
    )
