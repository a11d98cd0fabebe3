"""COCO label maps: raw category id -> contiguous class index (and names), read from JSON.

The COCO builder writes the map next to its shards. The reader accepts every layout below, so a map
written by hand or by another tool works too:

* `{"1": 0, "3": 1, ...}`                                   (plain id -> index)
* `{"1": {"index": 0, "name": "person"}, ...}`              (id -> record)
* `[{"id": 1, "name": "person", "index": 0}, ...]`          (list of records)
* `{"categories": [...records...], ...}`                    (COCO-style; other keys ignored)

A record's index may be called `index`, `contiguous_id` or `class_index`. When no record carries an
index, indices follow ascending category id (the Model Garden / Detectron convention).

Example:
    label_map = read_label_map("/data/coco/label_map.json")
    label_map.id_to_index[90]  # -> 79
    table = lookup_table(label_map)  # tf.int64 ids -> tf.int64 indices (-1 for unknown ids)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import tensorflow as tf

from transfer_tf.errors import UsageError

_INDEX_KEYS = ("index", "contiguous_id", "class_index")


@dataclass(frozen=True)
class LabelMap:
    """Category id -> contiguous index 0..K-1, and the class names in index order ('' if unknown)."""

    id_to_index: dict[int, int]
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def display_names(self) -> list[str]:
        """Class names in index order; a nameless category shows as its id (e.g. "90")."""
        ids = {index: cid for cid, index in self.id_to_index.items()}
        return [name or str(ids[i]) for i, name in enumerate(self.names)]


def _records(data: object, path: str) -> list[dict]:
    """Normalises every accepted layout to a list of `{"id", "name"?, "index"?}` records."""
    if isinstance(data, dict) and "categories" in data:
        data = data["categories"]
    if isinstance(data, list):
        if not all(isinstance(r, dict) and "id" in r for r in data):
            raise UsageError(f"label map '{path}': expected a list of objects with an 'id' key")
        return [dict(r) for r in data]
    if isinstance(data, dict):
        records = []
        for key, value in data.items():
            if isinstance(value, dict):
                records.append({"id": key, **value})
            elif isinstance(value, int) and not isinstance(value, bool):
                records.append({"id": key, "index": value})
            else:
                raise UsageError(
                    f"label map '{path}': entry {key!r} should be an index or an object, got {value!r}"
                )
        return records
    raise UsageError(f"label map '{path}': expected a JSON object or list at the top level")


def parse_label_map(data: object, path: str = "<label map>") -> LabelMap:
    """Builds a LabelMap from already-loaded JSON data (see the module docstring for layouts)."""
    records = _records(data, path)
    if not records:
        raise UsageError(f"label map '{path}': no categories")
    try:
        ids = [int(r["id"]) for r in records]
    except (TypeError, ValueError):
        raise UsageError(f"label map '{path}': category ids must be integers") from None
    if len(set(ids)) != len(ids):
        raise UsageError(f"label map '{path}': duplicate category ids")
    indices = [next((r[k] for k in _INDEX_KEYS if k in r), None) for r in records]
    if all(i is None for i in indices):
        order = sorted(range(len(ids)), key=lambda j: ids[j])
        indices = [0] * len(ids)
        for rank, j in enumerate(order):
            indices[j] = rank
    elif any(i is None for i in indices):
        raise UsageError(f"label map '{path}': some categories have an index and some do not")
    if sorted(int(i) for i in indices) != list(range(len(ids))):
        raise UsageError(
            f"label map '{path}': indices must be 0..{len(ids) - 1}, each once, got {sorted(indices)}"
        )
    names = [""] * len(ids)
    for r, i in zip(records, indices, strict=True):
        names[int(i)] = str(r.get("name", ""))
    return LabelMap({c: int(i) for c, i in zip(ids, indices, strict=True)}, tuple(names))


def read_label_map(path: str) -> LabelMap:
    """Reads a label map JSON file (any TF filesystem path).

    Raises:
      UsageError: missing file, invalid JSON, or a map that is not a bijection onto 0..K-1.
    """
    if not tf.io.gfile.exists(path):
        raise UsageError(f"label map file '{path}' does not exist")
    with tf.io.gfile.GFile(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise UsageError(
                f"label map '{path}': not valid JSON ({e.msg}, line {e.lineno})"
            ) from None
    return parse_label_map(data, path)


def lookup_table(label_map: LabelMap) -> tf.lookup.StaticHashTable:
    """Returns a table mapping int64 category ids to int64 class indices (-1 for unknown ids)."""
    keys = tf.constant(list(label_map.id_to_index), tf.int64)
    values = tf.constant(list(label_map.id_to_index.values()), tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)
