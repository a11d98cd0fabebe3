"""Corrupt data in strict mode (`data.on_corrupt_record: error`): name the shard, the record
and its byte offset in one line.

Strict mode costs nothing while the data is good. The hot pipeline is a plain
`TFRecordDataset -> map -> batch`; its map runs under a name scope that carries a pipeline tag
(`transfer_tf_input_N`), which TensorFlow copies into the message of any op that fails there.
`corrupt_data_error(error)` is the post-mortem: for a tagged error it re-reads that pipeline's
shards (in parallel, fully decoding every image, then record by record in the first dirty shard)
and returns a one-line `UsageError` naming the shard, record and byte offset; for broken TFRecord
framing (`DataLossError: corrupted record at OFFSET` for bytes overwritten in a shard, `truncated
record at OFFSET` for a cut file; no tag) it checks the framing of the shards of the pipelines
built in this process. `cli.run` calls it for every TensorFlow error that reaches a binary, so a
corrupt record stops a job with
`error: transfer_tf corrupt data: cannot parse/decode record N of shard PATH (byte offset B; ...)`
or `... truncated or corrupt TFRecord framing at record N of shard PATH (byte offset B of SIZE;
...)`.

Skip mode (`data.on_corrupt_record: skip`) lives in skipping.py.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
import threading
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from transfer_tf.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE
CORRUPT_PREFIX = "transfer_tf corrupt data:"
# TFRecord framing: u64 length, u32 length CRC, payload, u32 payload CRC. TensorFlow reports a bad
# length CRC at the record's offset and a bad payload CRC at the payload's, 12 bytes on.
_RECORD_OVERHEAD = 16
_HEADER = 12


# -- strict mode: the post-mortem ------------------------------------------------------------

_TAG_PREFIX = "transfer_tf_input_"
_TAG_RE = re.compile(_TAG_PREFIX + r"(\d+)")
_FRAMING_RE = re.compile(r"(?:truncated|corrupted) record at (\d+)")
_MAX_PIPELINES = 64
_SKIP_HINT = " (data.on_corrupt_record=skip skips such records, logging and counting them)"


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


def _first_bad_record(path: str, check) -> tuple[int, int, str] | None:
    """(index, byte offset, reason) of the first record of `path` that fails `check` (or breaks
    framing)."""
    records = tf.data.TFRecordDataset(path)
    if check is not None:
        consumed = _consumed(check)
        records = records.map(lambda r: (tf.strings.length(r), consumed(r)))
    else:
        records = records.map(lambda r: (tf.strings.length(r), tf.constant(0, tf.int64)))
    iterator, index, offset = iter(records), 0, 0
    while True:
        try:
            length, _ = next(iterator)
        except StopIteration:
            return None
        except tf.errors.DataLossError as e:
            return index, offset, "framing: " + _first_line(e.message)
        except tf.errors.OpError as e:  # the record itself; iteration can go on
            return index, offset, _first_line(e.message)
        index += 1
        offset += int(length) + _RECORD_OVERHEAD


def _framing_at(consumed: int, reported: int) -> bool:
    """Whether TensorFlow's `... record at REPORTED` is the record that starts at `consumed`."""
    return consumed <= reported <= consumed + _HEADER


def _scan(pipeline: _Pipeline, framing_offset: int | None) -> str | None:
    """The corrupt-data message for the first bad shard of `pipeline`, or None if all are clean.

    `framing_offset`: the offset of a framing error (only the framing is read, and the shard
    broken there is named); -1: any shard whose framing breaks; None: decode every record."""
    check = None if framing_offset is not None else pipeline.check
    sizes = [tf.io.gfile.stat(f).length for f in pipeline.files]
    summaries = _file_summaries(pipeline.files, check)
    for path, size, (count, good, consumed) in zip(pipeline.files, sizes, summaries, strict=True):
        count, good, consumed = int(count), int(good), int(consumed)
        broken_framing = consumed != size
        if framing_offset is not None and not (
            broken_framing and (framing_offset < 0 or _framing_at(consumed, framing_offset))
        ):
            continue
        if good < count:
            found = _first_bad_record(path, check)
            if found is not None and not found[2].startswith("framing: "):
                index, offset, reason = found
                return (
                    f"{CORRUPT_PREFIX} cannot parse/decode record {index} of shard {path} "
                    f"(byte offset {offset}; {reason})"
                )
        if broken_framing:
            return (
                f"{CORRUPT_PREFIX} truncated or corrupt TFRecord framing at record {count} of "
                f"shard {path} (byte offset {consumed} of {size}; the shard cannot be read past "
                "it)"
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
    if CORRUPT_PREFIX in message:  # an earlier call's message
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
    if framing and not tag:
        # No shard breaks at that very offset (a remote filesystem may report another one):
        # name the first shard whose framing breaks at all rather than fail with a traceback.
        for pipeline in candidates:
            text = _scan(pipeline, -1) if pipeline.files else None
            if text is not None:
                return UsageError(text + _SKIP_HINT)
    return None
