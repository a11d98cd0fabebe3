"""What the builders wrote next to the shards, checked against the config before any step runs.

Our builders write a manifest beside their shards (`manifest.json` for ImageNet / image folders,
`manifest-<prefix>.json` plus `label_map.json` for COCO; see `builders/sharded_writer.py`). It
records the schema, the number of classes, the label offset, the class names / label map, and
every shard with its record count and size. When the shards of a data pattern are listed in such
a manifest, `check_data_config` compares the config with it:

* `data.schema`, `data.num_classes`, `data.label_offset` (classification), the image format
  (`data.jpeg_only` needs JPEG; our builders always write JPEG), `data.label_names_file`
  (classification) and `data.label_map_file` (COCO) must agree with the manifest; a mismatch is a
  one-line ConfigError naming both values and the manifest file;
* `data.num_classes: auto` (stored as 0) takes the manifest's count; a COCO config without
  `data.label_map_file` takes the `label_map.json` beside the shards;
* TFDS sources take `num_classes` from their ClassLabel feature.

Shards made by the public tools have no manifest: nothing is checked, except that an explicit
COCO `data.label_map_file` must have `data.num_classes` entries. The manifest's per-shard record
counts also let the input pipeline find an epoch's length without reading the shards
(`record_counts`).

Example:
    data_cfg = check_data_config(cfg.data)          # raises ConfigError on a mismatch
    data_cfg.num_classes                            # filled in when the config said `auto`
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import posixpath

import tensorflow as tf
from absl import logging

from transfer_tf.config import AUTO_NUM_CLASSES, ConfigError, DataConfig
from transfer_tf.data.files import list_files
from transfer_tf.data.label_maps import parse_label_map, read_label_map
from transfer_tf.errors import UsageError

# Our builders re-encode every image as JPEG; a manifest may say otherwise (`image_format`).
_DEFAULT_FORMAT = "JPEG"


@dataclasses.dataclass(frozen=True)
class Manifest:
    """One builder manifest: its path, its JSON, and `{shard basename: (records, bytes)}`."""

    path: str
    data: dict
    shards: dict[str, tuple[int, int]]

    @property
    def num_classes(self) -> int | None:
        if "num_classes" in self.data:
            return int(self.data["num_classes"])
        label_map = self.data.get("label_map")
        return len(label_map) if isinstance(label_map, list) else None


def _dirname(path: str) -> str:
    # posixpath keeps `gs://bucket/dir` intact where os.path would too, but says so explicitly.
    return posixpath.dirname(path) if "://" in path else os.path.dirname(path)


def _load(path: str) -> Manifest | None:
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"manifest '{path}': not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
        return None  # some other JSON that happens to be called manifest*.json
    shards = {}
    for split in data["splits"].values():
        for entry in split.get("shards", []):
            shards[str(entry["file"])] = (int(entry["records"]), int(entry.get("bytes", -1)))
    return Manifest(path, data, shards)


def find_manifests(files: list[str]) -> dict[str, Manifest]:
    """`{file: the complete manifest listing it}` for the files a builder manifest lists.

    Looks for `manifest*.json` (not the per-task partial ones) in each file's directory. Files
    that no manifest lists (public tools, hand-made shards) are absent from the result.
    """
    by_dir: dict[str, list[Manifest]] = {}
    out: dict[str, Manifest] = {}
    for path in files:
        directory = _dirname(path)
        if directory not in by_dir:
            pattern = posixpath.join(directory, "manifest*.json") if directory else "manifest*.json"
            found = []
            for candidate in sorted(tf.io.gfile.glob(pattern)):
                if ".task-" in os.path.basename(candidate):
                    continue
                manifest = _load(candidate)
                if manifest is not None and manifest.data.get("complete", True):
                    found.append(manifest)
            by_dir[directory] = found
        name = os.path.basename(path)
        for manifest in by_dir[directory]:
            if name in manifest.shards:
                out[path] = manifest
                break
    return out


def record_counts(files: list[str]) -> list[int] | None:
    """Records per file from the builders' manifests (None unless every file is listed with the
    size it has now: a rewritten shard must not be trusted to hold the listed count)."""
    manifests = find_manifests(files)
    if len(manifests) != len(files):
        return None
    listed = [manifests[path].shards[os.path.basename(path)] for path in files]
    # Remote stats are slow one by one; a small pool keeps 1000+ GCS shards to a second or two.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(lambda f: tf.io.gfile.stat(f).length, files))
    if any(want >= 0 and have != want for (_, want), have in zip(listed, sizes, strict=True)):
        return None
    return [records for records, _ in listed]


def _mismatch(key: str, mine, theirs, path: str, what: str = "") -> ConfigError:
    return ConfigError(
        f"config key 'data.{key}' is {mine!r} but {path} says {what or key} is {theirs!r} "
        "(fix the config or point it at the shards it describes)"
    )


def _read_names(path: str) -> list[str]:
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"config key 'data.label_names_file': '{path}' does not exist")
    with tf.io.gfile.GFile(path, "r") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def _check_one(data_cfg: DataConfig, manifest: Manifest) -> DataConfig:
    data, path = manifest.data, manifest.path
    schema = data.get("schema")
    if schema and schema != data_cfg.schema:
        raise _mismatch("schema", data_cfg.schema, schema, path)
    num_classes = manifest.num_classes
    if num_classes is not None:
        if data_cfg.num_classes == AUTO_NUM_CLASSES:
            data_cfg = dataclasses.replace(data_cfg, num_classes=num_classes)
        elif data_cfg.num_classes != num_classes:
            raise _mismatch("num_classes", data_cfg.num_classes, num_classes, path)
    image_format = str(data.get("image_format", _DEFAULT_FORMAT))
    if data_cfg.jpeg_only and image_format.upper() != "JPEG":
        raise _mismatch("jpeg_only", True, image_format, path, "the image format")
    label_map = data.get("label_map") if isinstance(data.get("label_map"), list) else None
    if data_cfg.schema == "classification":
        if "label_offset" in data and int(data["label_offset"]) != data_cfg.label_offset:
            raise _mismatch("label_offset", data_cfg.label_offset, int(data["label_offset"]), path)
        if data_cfg.label_names_file and label_map is not None:
            names = _read_names(data_cfg.label_names_file)
            want = [str(e.get("name", e.get("key", ""))) for e in label_map]
            if names != want:
                i = next(
                    (k for k, (a, b) in enumerate(zip(names, want, strict=False)) if a != b),
                    min(len(names), len(want)),
                )
                mine = names[i] if i < len(names) else "<end of file>"
                theirs = want[i] if i < len(want) else "<no such class>"
                raise ConfigError(
                    f"config key 'data.label_names_file' ({data_cfg.label_names_file}) names "
                    f"class {i} {mine!r} but {path} says {theirs!r}"
                )
    elif label_map is not None:  # COCO: the category list is the label map
        theirs = parse_label_map(label_map, path)
        if not data_cfg.label_map_file:
            beside = posixpath.join(_dirname(path), "label_map.json")
            if tf.io.gfile.exists(beside):
                data_cfg = dataclasses.replace(data_cfg, label_map_file=beside)
        if data_cfg.label_map_file:
            mine = read_label_map(data_cfg.label_map_file)
            if mine.id_to_index != theirs.id_to_index:
                raise ConfigError(
                    f"config key 'data.label_map_file' ({data_cfg.label_map_file}) maps "
                    f"{len(mine.id_to_index)} category ids differently from {path} "
                    f"({_first_difference(mine.id_to_index, theirs.id_to_index)})"
                )
            if all(mine.names) and all(theirs.names) and mine.names != theirs.names:
                i = next(
                    k
                    for k, (a, b) in enumerate(zip(mine.names, theirs.names, strict=False))
                    if a != b
                )
                raise ConfigError(
                    f"config key 'data.label_map_file' ({data_cfg.label_map_file}) names class "
                    f"{i} {mine.names[i]!r} but {path} says {theirs.names[i]!r}"
                )
    return data_cfg


def _first_difference(mine: dict[int, int], theirs: dict[int, int]) -> str:
    for cid in sorted(set(mine) | set(theirs)):
        if mine.get(cid) != theirs.get(cid):
            return f"category {cid}: index {mine.get(cid)} vs {theirs.get(cid)}"
    return "same ids"


def _check_tfds(data_cfg: DataConfig, pattern: str) -> DataConfig:
    from transfer_tf.data import tfds_source

    num_classes = tfds_source.num_classes(data_cfg, pattern)
    if num_classes is None:
        return data_cfg
    if data_cfg.num_classes == AUTO_NUM_CLASSES:
        return dataclasses.replace(data_cfg, num_classes=num_classes)
    if data_cfg.num_classes != num_classes:
        raise _mismatch(
            "num_classes", data_cfg.num_classes, num_classes, pattern, "its ClassLabel count"
        )
    return data_cfg


def check_pattern(data_cfg: DataConfig, pattern: str, files: list[str] | None) -> DataConfig:
    """Checks `data_cfg` against the manifests of `pattern`'s files (`files`: its expansion, or
    None for a TFDS source); returns it with `auto` values filled. Raises ConfigError."""
    if pattern.startswith("tfds:"):
        return _check_tfds(data_cfg, pattern)
    manifests = find_manifests(files or [])
    seen = set()
    for manifest in manifests.values():
        if manifest.path not in seen:
            seen.add(manifest.path)
            data_cfg = _check_one(data_cfg, manifest)
    if data_cfg.schema == "coco" and data_cfg.label_map_file:
        # Also without a manifest: a COCO label map fixes the head width.
        count = read_label_map(data_cfg.label_map_file).num_classes
        if data_cfg.num_classes == AUTO_NUM_CLASSES:
            data_cfg = dataclasses.replace(data_cfg, num_classes=count)
        elif data_cfg.num_classes != count:
            raise _mismatch(
                "num_classes",
                data_cfg.num_classes,
                count,
                data_cfg.label_map_file,
                "the number of categories",
            )
    return data_cfg


def unlabeled_manifest(pattern: str) -> str | None:
    """The manifest path when `pattern`'s shards were built without labels
    (`make_folder_tfrecords --unlabeled`), else None (TFDS sources: None)."""
    if not pattern or pattern.startswith("tfds:"):
        return None
    for manifest in find_manifests(list_files(pattern)).values():
        if manifest.data.get("unlabeled"):
            return manifest.path
    return None


def check_data_config(data_cfg: DataConfig) -> DataConfig:
    """Checks the train and eval patterns' manifests (see module doc); fills `auto` values.

    Raises:
      ConfigError: a config value disagrees with a manifest / label map / TFDS ClassLabel, or
        `data.num_classes: auto` with nothing to take it from.
    """
    for pattern in (data_cfg.train_pattern, data_cfg.eval_pattern):
        if pattern:
            files = None if pattern.startswith("tfds:") else list_files(pattern)
            data_cfg = check_pattern(data_cfg, pattern, files)
    if data_cfg.num_classes == AUTO_NUM_CLASSES:
        raise ConfigError(
            "config key 'data.num_classes' is auto but no builder manifest, COCO label map or "
            "TFDS ClassLabel describes the data: set it to the number of classes"
        )
    logging.info("data config checked against the builders' manifests (when present)")
    return data_cfg
