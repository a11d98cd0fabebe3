"""Checks TFRecord shards (ours or the public tools'): counts, labels, and that every image decodes.

Example:
    summary = inspect_tfrecords("/data/imagenet/validation-*")
    summary["records"], summary["undecodable"], summary["per_label"]   # 50000, 0, {"1": 50, ...}

Summary keys:
  schema            `classification` or `coco` (detected from the first record unless given)
  files, records    number of files and of records read
  per_label         classification: stored label -> records; coco: category id -> objects
  undecodable       records whose `image/encoded` does not decode to an image
  undecodable_examples  up to 10 `file:record-index` of those
  unparsable        records that are not Examples of the schema (wrong or missing keys)
  corrupt_files     files that stop with a data-loss error (bad length or CRC), with the reason
  coco only: objects, images_without_objects
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import tensorflow as tf

from transfer_tf.data import schemas
from transfer_tf.data.decoders import make_decoder
from transfer_tf.errors import UsageError

_MAX_EXAMPLES = 10


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


def _decodes(encoded: tf.Tensor) -> tf.Tensor:
    # decode_image covers JPEG (what the builders write) and PNG/GIF/BMP that other tools may
    # have stored; reading the shape forces a full decode.
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.shape(image)


def _count_records(path: str, summary: dict) -> int:
    records = 0
    try:
        for batch in tf.data.TFRecordDataset(path).batch(1024):
            records += int(batch.shape[0])
    except tf.errors.DataLossError as e:
        summary["corrupt_files"].append({"file": path, "reason": e.message.splitlines()[0]})
    return records


def _inspect_file(path: str, schema: str, summary: dict, per_label: Counter) -> None:
    decoder = make_decoder(schema)
    # Only the records before a data-loss error (if any) are read.
    records = _count_records(path, summary)
    indexed = tf.data.TFRecordDataset(path).take(records).enumerate()

    def parse(i: tf.Tensor, rec: tf.Tensor) -> tuple:
        # The pipeline's own decoder: what inspect accepts is exactly what training reads.
        tensors = decoder.decode(rec)
        if schema == "classification":
            # The decoder maps a missing label to -1 for the parser to reject; here it is unparsable.
            label = tf.reshape(tensors["label"], [1])
            tf.debugging.assert_non_negative(label, message="record has no image/class/label")
        else:
            label = tensors["classes"]
        return i, label, tensors["image"]

    # Each record is parsed and decoded on its own: ignore_errors drops a failing element, which
    # is then found missing from the index set, so one bad record does not hide the others.
    parsed = indexed.map(parse, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    parsed_ids = set()
    for i, labels, _ in parsed:
        parsed_ids.add(int(i))
        values = labels.numpy().tolist()
        per_label.update(str(v) for v in values)
        if schema == "coco":
            summary["objects"] += len(values)
            summary["images_without_objects"] += int(not values)
    decoded = parsed.map(
        lambda i, label, enc: (i, _decodes(enc)), num_parallel_calls=tf.data.AUTOTUNE
    ).ignore_errors()
    decoded_ids = {int(i) for i, _ in decoded}
    summary["records"] += records
    summary["unparsable"] += records - len(parsed_ids)
    bad = sorted(parsed_ids - decoded_ids)
    summary["undecodable"] += len(bad)
    room = _MAX_EXAMPLES - len(summary["undecodable_examples"])
    summary["undecodable_examples"] += [f"{path}:{i}" for i in bad[: max(room, 0)]]


def inspect_tfrecords(file_pattern: str, schema: str = "auto") -> dict[str, Any]:
    """Reads every record of the files matching `file_pattern` (comma-separated globs allowed).

    Args:
      schema: `classification`, `coco`, or `auto` (detected from the first record).
    Raises:
      UsageError: no file matches, or the schema is unknown / cannot be detected.
    """
    if schema not in ("auto", *schemas.SCHEMAS):
        raise UsageError(f"--schema must be auto, classification or coco, got '{schema}'")
    files: list[str] = []
    for pattern in (p.strip() for p in file_pattern.split(",") if p.strip()):
        files += sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise UsageError(f"--file_pattern '{file_pattern}' matches no file")
    if schema == "auto":
        first = None
        for path in files:
            try:
                first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
            except tf.errors.DataLossError:
                continue
            if first is not None:
                break
        schema = detect_schema(first.numpy()) if first is not None else "classification"
    summary: dict[str, Any] = {
        "schema": schema,
        "files": len(files),
        "records": 0,
        "undecodable": 0,
        "unparsable": 0,
        "undecodable_examples": [],
        "corrupt_files": [],
    }
    if schema == "coco":
        summary.update(objects=0, images_without_objects=0)
    per_label: Counter[str] = Counter()
    for path in files:
        _inspect_file(path, schema, summary, per_label)
    summary["per_label"] = dict(sorted(per_label.items(), key=lambda kv: int(kv[0])))
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """The summary as one line of JSON."""
    return json.dumps(summary, separators=(",", ":"))
