"""COCO images + instances JSON -> shards in Model Garden's `create_coco_tf_record.py` schema.

Drop-in for that tool (same flags, same feature keys, same `PREFIX-00000-of-00032.tfrecord`
names, image i of the JSON in shard i % num_shards), but streaming and resumable, and it skips
(and reports) missing, truncated or unreadable images instead of stopping.

Boxes: COCO `[x, y, w, h]` pixels -> normalised `[ymin, xmin, ymax, xmax]`. As in Model Garden,
a box with w <= 0 or h <= 0 or reaching outside the image is dropped (counted as
`degenerate_boxes_dropped`). Labels are the raw category ids; the contiguous index lives in the
label map `label_map.json` beside the shards:
  {"schema": "coco", "num_classes": 80,
   "categories": [{"id": 1, "name": "person", "index": 0}, ...]}   (sorted by id, index 0-based)

Example:
    build_coco(["/coco/val2017"], "/coco/annotations/instances_val2017.json", "/out/val",
               num_shards=8, include_masks=True)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.data import schemas
from transfer_tf.data.builders.coco_json import (
    CocoJson,
    annotation_fields,
    read_annotation,
    read_coco_json,
)
from transfer_tf.data.builders.coco_masks import BadSegmentation, mask_png
from transfer_tf.data.builders.image_codec import BadImage, prepare_image
from transfer_tf.data.builders.sharded_writer import (
    Encoded,
    Encoder,
    ShardSpec,
    WriteOptions,
    round_robin,
    shard_name,
    write_manifests,
    write_shards,
)
from transfer_tf.errors import UsageError


def load_label_map(path: str) -> dict[int, int]:
    """Reads `label_map.json`; returns {raw COCO category id: contiguous 0-based index}."""
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            data = json.load(f)
        return {int(c["id"]): int(c["index"]) for c in data["categories"]}
    except tf.errors.NotFoundError:
        raise UsageError(f"label map {path} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UsageError(
            f"label map {path}: expected {{'categories': [{{'id', 'name', 'index'}}, ...]}}"
        ) from None


class CocoShardItems(Sequence):
    """One shard's images as plan items, stored compactly (numpy arrays, no segmentations).

    Item i is {"id", "file_name", "height", "width", "annotations": [[byte offset, byte length],
    ...]} (the annotations' JSON objects in the annotations file), or with "skip": reason instead
    of "annotations" for an image that must not be written (a duplicate id or file name).
    """

    def __init__(
        self,
        images: list[tuple[Any, str, int, int, str]],
        starts: Any,
        offsets: Any,
        lengths: Any,
    ) -> None:
        self.images, self.starts, self.offsets, self.lengths = images, starts, offsets, lengths

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        image_id, file_name, height, width, skip = self.images[i]
        item: dict[str, Any] = {"id": image_id, "file_name": file_name}
        item.update(height=height, width=width)
        if skip:
            item["skip"] = skip
        else:
            lo, hi = int(self.starts[i]), int(self.starts[i + 1])
            item["annotations"] = [
                [int(o), int(n)]
                for o, n in zip(self.offsets[lo:hi], self.lengths[lo:hi], strict=True)
            ]
        return item


@dataclass(frozen=True)
class CocoEncoder(Encoder):
    """Reads the image, checks it against the JSON, reads and converts its annotations."""

    image_dirs: tuple[str, ...]
    category_names: tuple[tuple[int, str], ...]
    include_masks: bool
    annotations_file: str = ""
    # Items hold byte ranges into the annotations file: its digest stands for their content.
    annotations_sha256: str = ""

    def options(self) -> dict[str, Any]:
        return {
            "categories": [list(c) for c in self.category_names],
            "masks": self.include_masks,
            "annotations_sha256": self.annotations_sha256,
        }

    def _resolve(self, file_name: str) -> str:
        found = []
        for d in self.image_dirs:
            base = os.path.normpath(os.path.abspath(d))
            path = os.path.normpath(os.path.join(base, file_name))
            if os.path.commonpath([base, path]) != base:
                raise _Skip("file_name resolves outside --image_dir (refused)")
            if len(self.image_dirs) == 1 or os.path.exists(path):
                found.append(path)
        if not found:
            raise _Skip("file is missing from every --image_dir")
        if len(found) > 1:
            raise _Skip("file_name is in more than one --image_dir")
        return found[0]

    def _annotations(self, item: dict) -> list[dict]:
        if not item["annotations"]:
            return []
        out = []
        with open(self.annotations_file, "rb") as f:
            for offset, length in item["annotations"]:
                try:
                    a = read_annotation(self.annotations_file, offset, length, f)
                except ValueError:
                    a = None
                if a is None or a.get("image_id") != item["id"]:
                    raise _Skip(
                        f"{self.annotations_file} changed since planning (byte {offset} no "
                        "longer holds this image's annotation): rerun the build"
                    )
                out.append(a)
        return out

    def encode(self, item: Any) -> Encoded:
        file_name = item["file_name"]
        if item.get("skip"):
            return Encoded(None, file_name, skip_reason=item["skip"])
        try:
            path = self._resolve(file_name)
            with open(path, "rb") as f:
                image = prepare_image(f.read())
            annotations = self._annotations(item)
        except _Skip as e:
            return Encoded(None, file_name, skip_reason=str(e))
        except FileNotFoundError:
            return Encoded(None, file_name, skip_reason="file is missing")
        except OSError as e:
            return Encoded(None, file_name, skip_reason=f"cannot read file: {e.strerror or e}")
        except BadImage as e:
            return Encoded(None, file_name, skip_reason=str(e))
        h, w = item["height"], item["width"]
        if (image.height, image.width) != (h, w):
            return Encoded(
                None,
                file_name,
                skip_reason=f"image is {image.width}x{image.height} but the JSON says {w}x{h}",
            )
        names = dict(self.category_names)
        boxes, ids, texts, crowd, areas, masks = [], [], [], [], [], []
        dropped = dropped_polygons = 0
        for a in annotations:
            x, y, bw, bh, cat, is_crowd, area = annotation_fields(a, self.annotations_file)
            if bw <= 0 or bh <= 0 or x < 0 or y < 0 or x + bw > w or y + bh > h:
                dropped += 1
                continue
            if self.include_masks:
                try:
                    png, n = mask_png(a.get("segmentation"), h, w)
                except BadSegmentation as e:
                    where = f"annotation {a.get('id', '?')}"
                    return Encoded(
                        None, file_name, skip_reason=f"{where}: malformed segmentation: {e}"
                    )
                masks.append(png)
                dropped_polygons += n
            boxes.append([y / h, x / w, (y + bh) / h, (x + bw) / w])
            ids.append(cat)
            texts.append(names[cat])
            crowd.append(is_crowd)
            areas.append(area)
        example = schemas.coco_example(
            image.jpeg,
            height=h,
            width=w,
            filename=file_name,
            source_id=str(item["id"]),
            sha256=hashlib.sha256(image.jpeg).hexdigest(),
            boxes_yxyx=boxes,
            category_ids=ids,
            category_names=texts,
            is_crowd=crowd,
            areas=areas,
            masks_png=masks if self.include_masks else None,
        )
        counters = {"objects": len(ids), "degenerate_boxes_dropped": dropped}
        if self.include_masks:
            counters["degenerate_polygons_dropped"] = dropped_polygons
        if not ids:
            counters["images_without_objects"] = 1
        return Encoded(
            example.SerializeToString(deterministic=True),
            file_name,
            fixed=image.fixed,
            classes=tuple(str(c) for c in ids),
            counters=counters,
        )


class _Skip(Exception):
    pass


@dataclass(frozen=True)
class CocoPlan:
    """What `plan_coco` decided: shards, label map source, counters, and the encoder inputs."""

    specs: list[ShardSpec]
    categories: list[tuple[int, str]]
    counters: dict[str, int]
    annotations_file: str
    annotations_sha256: str
    has_annotations: bool


def plan_coco(
    image_dirs: Sequence[str],
    object_annotations_file: str,
    output_file_prefix: str,
    *,
    num_shards: int = 32,
    skip_empty: bool = False,
    image_info_file: str = "",
) -> CocoPlan:
    """Streams the JSON file(s) and assigns images to shards (image i -> shard i % num_shards).

    Holds per image its info and the byte ranges of its annotations, never a segmentation.
    Duplicate image ids and file names are planned as skipped items (the first one is kept).
    """
    if not image_dirs or not any(image_dirs):
        raise UsageError("--image_dir is required")
    for d in image_dirs:
        if not os.path.isdir(d):
            raise UsageError(f"--image_dir {d} is not a directory")
    if not object_annotations_file and not image_info_file:
        raise UsageError("--object_annotations_file (or --image_info_file) is required")
    if num_shards < 1:
        raise UsageError(f"--num_shards must be >= 1, got {num_shards}")
    if not output_file_prefix or output_file_prefix.endswith(("/", os.sep)):
        raise UsageError(
            f"--output_file_prefix '{output_file_prefix}': expected DIR/NAME, e.g. out/train"
        )
    ann = (
        read_coco_json(
            object_annotations_file, "object_annotations_file", images=not image_info_file
        )
        if object_annotations_file
        else CocoJson("")
    )
    info = read_coco_json(image_info_file, "image_info_file") if image_info_file else ann
    categories = ann.categories if ann.categories is not None else (info.categories or [])
    if skip_empty and not ann.has_annotations:
        src = object_annotations_file or image_info_file
        raise UsageError(f"--skip_empty: {src} has no 'annotations', so no image would be written")
    # Group the annotations of known categories by image (stable: file order within an image).
    cat = np.frombuffer(ann.ann_category, np.int64)
    keep = np.flatnonzero(np.isin(cat, np.array([c for c, _ in categories], np.int64)))
    code = np.frombuffer(ann.ann_image, np.int64)[keep]
    order = keep[np.argsort(code, kind="stable")]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(code, minlength=len(ann.image_codes)))])
    offsets = np.frombuffer(ann.ann_offset, np.int64)[order]
    lengths = np.frombuffer(ann.ann_length, np.int64)[order]
    counters = {"annotations_with_unknown_category": int(len(cat) - len(keep))}
    counters.update(duplicate_image_ids=0, duplicate_file_names=0)
    first_index: dict[Any, int] = {}
    first_name: dict[str, Any] = {}
    planned: list[tuple[Any, str, int, int, str]] = []
    ranges: list[tuple[int, int]] = []
    for i, (image_id, file_name, height, width) in enumerate(info.images):
        skip = ""
        if image_id in first_index:
            skip = f"duplicate image id {image_id!r} (images[{first_index[image_id]}] kept)"
            counters["duplicate_image_ids"] += 1
        elif file_name in first_name:
            skip = f"duplicate file_name (image id {first_name[file_name]!r} kept)"
            counters["duplicate_file_names"] += 1
        first_index.setdefault(image_id, i)
        first_name.setdefault(file_name, image_id)
        c = ann.image_codes.get(image_id)
        lo, hi = (0, 0) if c is None or skip else (int(bounds[c]), int(bounds[c + 1]))
        if skip_empty and not skip and lo == hi:
            continue
        planned.append((image_id, file_name, height, width, skip))
        ranges.append((lo, hi))
    del first_index, first_name
    out_dir = os.path.dirname(output_file_prefix) or "."
    base = os.path.basename(output_file_prefix)
    specs = []
    for s, chunk in enumerate(round_robin(range(len(planned)), num_shards)):
        idx = np.concatenate(
            [np.arange(*ranges[j], dtype=np.int64) for j in chunk] or [np.zeros(0, np.int64)]
        )
        sizes = [ranges[j][1] - ranges[j][0] for j in chunk]
        items = CocoShardItems(
            [planned[j] for j in chunk],
            np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]),
            offsets[idx],
            lengths[idx],
        )
        path = os.path.join(out_dir, shard_name(base, s, num_shards, ".tfrecord"))
        specs.append(ShardSpec(base, s, num_shards, path, items))
    counters["images_in_json"] = len(info.images)
    counters["images_planned"] = len(planned)
    return CocoPlan(
        specs, categories, counters, ann.path, ann.sha256, has_annotations=ann.has_annotations
    )


def build_coco(
    image_dirs: Sequence[str],
    object_annotations_file: str,
    output_file_prefix: str,
    *,
    num_shards: int = 32,
    include_masks: bool = False,
    skip_empty: bool = False,
    image_info_file: str = "",
    options: WriteOptions | None = None,
) -> str | None:
    """Writes `PREFIX-%05d-of-%05d.tfrecord` shards, `label_map.json` and
    `manifest-<name>.json` beside them; returns the manifest path (None while other tasks'
    shards are unfinished). Raises UsageError for missing dirs or malformed JSON."""
    options = options or WriteOptions()
    options.validate()
    plan = plan_coco(
        image_dirs,
        object_annotations_file,
        output_file_prefix,
        num_shards=num_shards,
        skip_empty=skip_empty,
        image_info_file=image_info_file,
    )
    specs, categories = plan.specs, plan.categories
    out_dir = os.path.dirname(output_file_prefix) or "."
    base = os.path.basename(output_file_prefix)
    tf.io.gfile.makedirs(out_dir)
    label_map = {
        "schema": "coco",
        "num_classes": len(categories),
        "categories": [{"id": cid, "name": n, "index": i} for i, (cid, n) in enumerate(categories)],
    }
    if categories:  # an image-info file without categories has no label map to offer
        _write_label_map(os.path.join(out_dir, "label_map.json"), label_map)
    encoder = CocoEncoder(
        tuple(image_dirs),
        tuple(categories),
        include_masks,
        plan.annotations_file,
        plan.annotations_sha256,
    )
    results = write_shards(specs, encoder, options, label=f"coco {base}")
    header = {
        "builder": "coco",
        "schema": "coco",
        "schema_version": schemas.SCHEMA_VERSION,
        "include_masks": include_masks,
        "skip_empty": skip_empty,
        "has_annotations": plan.has_annotations,
        "planning": plan.counters,
        "label_map": label_map["categories"],
    }
    return write_manifests(
        os.path.join(out_dir, f"manifest-{base}.json"), specs, encoder, options, results, header
    )


def _write_label_map(path: str, label_map: dict) -> None:
    # train and val share a folder and the category list: the same map is fine, a different one
    # would silently relabel the other split.
    if tf.io.gfile.exists(path):
        try:
            with tf.io.gfile.GFile(path, "r") as f:
                existing = json.load(f)
        except json.JSONDecodeError:
            existing = None
        if existing is not None and existing.get("categories") != label_map["categories"]:
            raise UsageError(
                f"{path} exists with different categories: write these shards to another folder"
            )
    write_json_atomic(path, label_map, indent=1)
