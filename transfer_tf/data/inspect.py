"""Checks TFRecord shards (ours or the public tools'): counts, labels, and every record judged as
training would judge it.

Each file is read once. Every record goes through the training parser's own check
(`Parser.validate`: the schema's decoder, the label range after `label_offset` or the COCO label
map, `data.jpeg_only`, a full image decode), so what inspect accepts is exactly what a training
run with the same data config reads, and what it rejects would stop that run (or be skipped with
`data.on_corrupt_record: skip`). The judging config is `data_cfg` (the binary:
`--config`/`--set`), else the defaults of `DataConfig` (label_offset 1, num_classes 1000,
jpeg_only true).

Example:
    summary = inspect_tfrecords("/data/imagenet/validation-*")
    summary["records"], summary["accepted"], summary["per_label"]   # 50000, 50000, {"1": 50, ...}

Summary keys:
  schema            `classification` or `coco` (the config's, else detected from the first record)
  judged_as         the data config values the records were judged with
  files, records    number of files and of records read
  accepted          records training reads
  unparsable        records that are not Examples of the schema (wrong or missing keys)
  bad_label         labels outside 0..num_classes-1 after label_offset / not in the label map
  not_jpeg          images that are not JPEG where training requires JPEG (data.jpeg_only)
  undecodable       records whose `image/encoded` does not decode to an image
  undecodable_examples  up to 10 `file:record-index` of those
  bad_examples      up to 10 `file:record-index (reason)` of every rejected record
  per_label         classification: stored label -> records; coco: category id -> objects
                    (over the records that parse)
  corrupt_files     files that stop with broken TFRecord framing (bad length or CRC)
  coco only: objects, images_without_objects
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import tensorflow as tf

from transfer_tf.config import DataConfig
from transfer_tf.data import schemas
from transfer_tf.data.decoders import make_decoder
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.data.parsers import Parser
from transfer_tf.errors import UsageError

_MAX_EXAMPLES = 10
_RECORD_OVERHEAD = 16  # TFRecord framing: u64 length, u32 length CRC, payload, u32 payload CRC
_READ_PARALLEL = 4  # files read at once (records are tagged with their file)
_BATCH = 256  # verdicts per Python step
# Verdicts, in the order the summary keys are checked.
OK, UNPARSABLE, NO_LABEL, BAD_LABEL, NOT_JPEG, UNDECODABLE = range(6)


def detect_schema(serialized: bytes) -> str:
    """`coco` if the Example has object boxes or a source id, else `classification`."""
    example = tf.train.Example.FromString(serialized)
    keys = set(example.features.feature.keys())
    if schemas.BBOX_XMIN in keys or schemas.SOURCE_ID in keys:
        return "coco"
    if schemas.CLASS_LABEL in keys:
        return "classification"
    raise UsageError(
        f"first record has neither '{schemas.CLASS_LABEL}' nor '{schemas.BBOX_XMIN}': "
        "not a classification or COCO shard"
    )


def _first_record(files: list[str]) -> bytes | None:
    for path in files:
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except tf.errors.DataLossError:
            continue
        if first is not None:
            return first.numpy()
    return None


def _judge_fn(parser: Parser, schema: str):
    """(file, index, record) -> a one-element dataset `(file, index, verdict, labels int64 [N],
    record bytes, decoded height)`. tf.data has no try/except: the full check runs first, and only when it fails
    does a parse-only pass (no decode) say why, with unparsable as the last resort."""
    decode = make_decoder(schema).decode
    multilabel = schema == "coco"

    def labels_of(tensors):
        return tf.reshape(tensors["classes"] if multilabel else tensors["label"], [-1])

    def accepted(k, i, record):
        tensors = decode(record)
        # The decoded height travels to the output: an unused decode could be pruned away.
        height = tf.cast(parser.validate(tensors)[0], tf.int64)
        return k, i, tf.constant(OK), labels_of(tensors), record, height

    def why_rejected(k, i, record):
        tensors = decode(record)
        verdict = tf.constant(UNDECODABLE)
        if parser.requires_jpeg:
            verdict = tf.where(tf.io.is_jpeg(tensors["image"]), verdict, NOT_JPEG)
        verdict = tf.where(parser.labels_in_range(tensors), verdict, BAD_LABEL)
        if not multilabel:
            # The classification decoder maps a missing label to -1.
            verdict = tf.where(tensors["label"] < 0, NO_LABEL, verdict)
        return k, i, verdict, labels_of(tensors), record, tf.constant(-1, tf.int64)

    def judge(k, i, record):
        one = tf.data.Dataset.from_tensors((k, i, record))
        unparsable = (
            k,
            i,
            tf.constant(UNPARSABLE),
            tf.zeros([0], tf.int64),
            record,
            tf.constant(-1, tf.int64),
        )
        return (
            one.map(accepted)
            .ignore_errors()
            .concatenate(one.map(why_rejected).ignore_errors())
            .concatenate(tf.data.Dataset.from_tensors(unparsable))
            .take(1)
        )

    return judge


def _verdicts(files: list[str], parser: Parser, schema: str, parallel: int) -> tf.data.Dataset:
    """Every record of `files`, each read once: batches of (file index, record index, verdict,
    ragged labels, record length, decoded height or -1). Broken framing ends a file early (ignore_errors); the byte
    count then falls short of the file's size."""

    def read(k):
        records = tf.data.TFRecordDataset(tf.gather(tf.constant(files), k)).ignore_errors()
        return records.enumerate().map(lambda i, r: (k, i, r))

    records = tf.data.Dataset.range(len(files)).interleave(
        read,
        cycle_length=min(_READ_PARALLEL, len(files)),
        num_parallel_calls=min(_READ_PARALLEL, len(files)),
        deterministic=True,
    )
    judged = records.interleave(
        _judge_fn(parser, schema),
        cycle_length=parallel,
        block_length=1,
        num_parallel_calls=parallel,
        deterministic=True,
    )
    judged = judged.map(
        lambda k, i, verdict, labels, record, height: (
            k,
            i,
            verdict,
            labels,
            tf.cast(tf.strings.length(record), tf.int64),
            height,
        )
    )
    return judged.ragged_batch(_BATCH).prefetch(2)


def _reasons(parser: Parser, schema: str) -> dict[int, str]:
    return {
        UNPARSABLE: f"not an Example of the {schema} schema",
        NO_LABEL: f"record has no {schemas.CLASS_LABEL}",
        BAD_LABEL: parser.label_error(schema == "coco"),
        NOT_JPEG: "image is not a JPEG: data.jpeg_only",
        UNDECODABLE: "image does not decode",
    }


def inspect_tfrecords(
    file_pattern: str, schema: str = "auto", data_cfg: DataConfig | None = None
) -> dict[str, Any]:
    """Reads every record of the files matching `file_pattern` (comma-separated globs allowed)
    once, and judges it as the training input pipeline would.

    Args:
      schema: `classification`, `coco`, or `auto` (the schema of `data_cfg` when given, else
        detected from the first record).
      data_cfg: the training data config to judge with (num_classes, label_offset,
        label_map_file, jpeg_only); None = `DataConfig()` defaults.
    Raises:
      UsageError: no file matches, the schema is unknown / cannot be detected, or the label map
        cannot be read.
    """
    if schema not in ("auto", *schemas.SCHEMAS):
        raise UsageError(f"--schema must be auto, classification or coco, got '{schema}'")
    files: list[str] = []
    for pattern in (p.strip() for p in file_pattern.split(",") if p.strip()):
        files += sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise UsageError(f"--file_pattern '{file_pattern}' matches no file")
    if schema == "auto" and data_cfg is not None:
        schema = data_cfg.schema
    elif schema == "auto":
        first = _first_record(files)
        schema = detect_schema(first) if first is not None else "classification"
    data_cfg = dataclasses.replace(data_cfg or DataConfig(), schema=schema)
    label_map = read_label_map(data_cfg.label_map_file) if data_cfg.label_map_file else None
    parser = Parser(data_cfg, training=True, label_map=label_map, jpeg_only=data_cfg.jpeg_only)
    summary: dict[str, Any] = {
        "schema": schema,
        "judged_as": {
            "num_classes": data_cfg.num_classes,
            "label_offset": data_cfg.label_offset,
            "label_map_file": data_cfg.label_map_file,
            "jpeg_only": data_cfg.jpeg_only,
        },
        "files": len(files),
        "records": 0,
        "accepted": 0,
        "unparsable": 0,
        "bad_label": 0,
        "not_jpeg": 0,
        "undecodable": 0,
        "undecodable_examples": [],
        "bad_examples": [],
        "corrupt_files": [],
    }
    if schema == "coco":
        summary.update(objects=0, images_without_objects=0)
    from transfer_tf.data.input import parallelism

    counts = [0] * len(files)
    consumed = [0] * len(files)
    per_label: Counter[str] = Counter()
    reasons = _reasons(parser, schema)
    keys = {UNPARSABLE: "unparsable", NO_LABEL: "unparsable", BAD_LABEL: "bad_label"}
    keys.update({NOT_JPEG: "not_jpeg", UNDECODABLE: "undecodable"})
    for batch in _verdicts(files, parser, schema, max(parallelism(data_cfg), 1)):
        file_ids, indices, verdicts, labels, lengths, _ = (
            x.numpy() if not isinstance(x, tf.RaggedTensor) else x.to_list() for x in batch
        )
        for k, i, verdict, values, length in zip(
            file_ids, indices, verdicts, labels, lengths, strict=True
        ):
            counts[k] += 1
            consumed[k] += int(length) + _RECORD_OVERHEAD
            if verdict == OK:
                summary["accepted"] += 1
            else:
                summary[keys[int(verdict)]] += 1
                where = f"{files[k]}:{i}"
                if len(summary["bad_examples"]) < _MAX_EXAMPLES:
                    summary["bad_examples"].append(f"{where} ({reasons[int(verdict)]})")
                if verdict == UNDECODABLE and len(summary["undecodable_examples"]) < _MAX_EXAMPLES:
                    summary["undecodable_examples"].append(where)
            if verdict in (UNPARSABLE, NO_LABEL):
                continue
            per_label.update(str(v) for v in values)
            if schema == "coco":
                summary["objects"] += len(values)
                summary["images_without_objects"] += int(not values)
    for path, count, framed in zip(files, counts, consumed, strict=True):
        size = tf.io.gfile.stat(path).length
        if framed != size:
            summary["corrupt_files"].append(
                {
                    "file": path,
                    "reason": f"truncated or corrupt TFRecord framing after record {count} "
                    f"(byte {framed} of {size})",
                }
            )
    summary["records"] = sum(counts)
    summary["per_label"] = dict(sorted(per_label.items(), key=lambda kv: int(kv[0])))
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """The summary as one line of JSON."""
    return json.dumps(summary, separators=(",", ":"))
