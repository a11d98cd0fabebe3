"""COCO images + instances JSON -> shards in Model Garden's `create_coco_tf_record.py` schema.

Drop-in for that tool (same flags, same feature keys, same `PREFIX-00000-of-00032.tfrecord`
names, image i of the JSON in shard i % num_shards), but streaming and resumable, and it skips
(and reports) missing, truncated or unreadable images instead of stopping.

Memory does not follow the JSON: `coco_plan` streams it and keeps byte ranges, and each worker
reads its images' annotations from those ranges. With masks, an image whose segmentation is
malformed is skipped with the reason and polygons of < 3 points are dropped (`coco_masks`).
Duplicate image ids / file names are skipped (first one kept); an image-info file without
"annotations" (test-dev) writes every image without objects.

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

import tensorflow as tf

from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.data import schemas
from transfer_tf.data.builders.coco_json import annotation_fields, read_annotation
from transfer_tf.data.builders.coco_masks import BadSegmentation, mask_png
from transfer_tf.data.builders.coco_plan import plan_coco
from transfer_tf.data.builders.image_codec import BadImage, prepare_image
from transfer_tf.data.builders.manifests import write_manifests
from transfer_tf.data.builders.sharded_writer import (
    Encoded,
    Encoder,
    WriteOptions,
    write_shards,
)
from transfer_tf.data.builders.write_errors import check_writable, writing
from transfer_tf.errors import UsageError


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
    strict: bool = False,
) -> str | None:
    """Writes `PREFIX-%05d-of-%05d.tfrecord` shards, `label_map.json` and
    `manifest-<name>.json` beside them; returns the manifest path (None while other tasks'
    shards are unfinished). `strict`: refuse a JSON whose annotations name image or category ids
    it does not list (default: drop, count and log them; see `coco_plan.plan_coco`).
    Raises UsageError for missing dirs, malformed JSON, or (`strict`) dangling ids."""
    options = options or WriteOptions()
    options.validate()
    out_dir = os.path.dirname(output_file_prefix) or "."
    if output_file_prefix and not output_file_prefix.endswith(("/", os.sep)):  # else plan_coco says
        # Before the JSON (hundreds of MB for train2017) is read.
        check_writable(out_dir, "--output_file_prefix")
    plan = plan_coco(
        image_dirs,
        object_annotations_file,
        output_file_prefix,
        num_shards=num_shards,
        skip_empty=skip_empty,
        image_info_file=image_info_file,
        strict=strict,
    )
    specs, categories = plan.specs, plan.categories
    base = os.path.basename(output_file_prefix)
    with writing(out_dir):
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
    # What the build reads and writes: all local lets the workers fork from this process.
    paths = [*image_dirs, object_annotations_file, image_info_file, out_dir]
    results = write_shards(
        specs, encoder, options, label=f"coco {base}", input_paths=[p for p in paths if p]
    )
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
    with writing(path):
        write_json_atomic(path, label_map, indent=1)
