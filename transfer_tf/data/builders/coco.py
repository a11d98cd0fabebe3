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
import io
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.data import schemas
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


def _read_json(path: str, flag: str) -> dict:
    if not os.path.isfile(path):
        raise UsageError(f"--{flag} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise UsageError(f"--{flag} {path}{where}: not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UsageError(f"--{flag} {path}: expected a COCO JSON object with an 'images' list")
    return data


def _field(obj: dict, key: str, path: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise UsageError(f"{path}: {what} without '{key}': {str(obj)[:80]}")
    return obj[key]


@dataclass(frozen=True)
class CocoEncoder(Encoder):
    """Reads the image, checks it against the JSON, converts the annotations."""

    image_dirs: tuple[str, ...]
    category_names: tuple[tuple[int, str], ...]
    include_masks: bool

    def options(self) -> dict[str, Any]:
        return {"categories": [list(c) for c in self.category_names], "masks": self.include_masks}

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

    def encode(self, item: Any) -> Encoded:
        file_name = item["file_name"]
        try:
            path = self._resolve(file_name)
            with open(path, "rb") as f:
                image = prepare_image(f.read())
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
        dropped = 0
        for x, y, bw, bh, cat, is_crowd, area, seg in item["objects"]:
            if bw <= 0 or bh <= 0 or x < 0 or y < 0 or x + bw > w or y + bh > h:
                dropped += 1
                continue
            boxes.append([y / h, x / w, (y + bh) / h, (x + bw) / w])
            ids.append(cat)
            texts.append(names[cat])
            crowd.append(is_crowd)
            areas.append(area)
            if self.include_masks:
                masks.append(_mask_png(seg, h, w))
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


def _mask_png(segmentation: Any, height: int, width: int) -> bytes:
    """COCO polygons or RLE -> PNG of a uint8 {0, 1} mask [height, width]."""
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_util

    if not segmentation:
        binary = np.zeros((height, width), np.uint8)
    else:
        rle = mask_util.frPyObjects(segmentation, height, width)
        binary = mask_util.decode(rle)
        if binary.ndim == 3:  # one channel per polygon: their union
            binary = np.amax(binary, axis=2)
    out = io.BytesIO()
    Image.fromarray(binary.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def plan_coco(
    image_dirs: Sequence[str],
    object_annotations_file: str,
    output_file_prefix: str,
    *,
    num_shards: int = 32,
    include_masks: bool = False,
    skip_empty: bool = False,
    image_info_file: str = "",
) -> tuple[list[ShardSpec], list[tuple[int, str]], dict[str, int]]:
    """Loads the JSON and assigns images to shards.

    Returns (shard specs, [(category id, name)] sorted by id, planning counters).
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
    try:
        return _plan_coco(
            image_dirs,
            object_annotations_file,
            output_file_prefix,
            num_shards,
            include_masks,
            skip_empty,
            image_info_file,
        )
    except (TypeError, ValueError) as e:
        src = object_annotations_file or image_info_file
        raise UsageError(f"{src}: malformed COCO annotation ({e})") from None


def _plan_coco(
    image_dirs: Sequence[str],
    object_annotations_file: str,
    output_file_prefix: str,
    num_shards: int,
    include_masks: bool,
    skip_empty: bool,
    image_info_file: str,
) -> tuple[list[ShardSpec], list[tuple[int, str]], dict[str, int]]:
    categories: list[tuple[int, str]] = []
    by_image: dict[Any, list] = defaultdict(list)
    counters = {"annotations_with_unknown_category": 0}
    if object_annotations_file:
        path = object_annotations_file
        data = _read_json(path, "object_annotations_file")
        for c in data.get("categories", []):
            categories.append(
                (int(_field(c, "id", path, "category")), str(_field(c, "name", path, "category")))
            )
        categories.sort()
        known = {cid for cid, _ in categories}
        for a in data.get("annotations", []):
            cat = int(_field(a, "category_id", path, "annotation"))
            if cat not in known:
                counters["annotations_with_unknown_category"] += 1
                continue
            x, y, bw, bh = (float(v) for v in _field(a, "bbox", path, "annotation"))
            seg = a.get("segmentation") if include_masks else None
            by_image[_field(a, "image_id", path, "annotation")].append(
                [x, y, bw, bh, cat, int(a.get("iscrowd", 0)), float(a.get("area", bw * bh)), seg]
            )
        images = data["images"] if not image_info_file else None
        del data
    if image_info_file:
        images = _read_json(image_info_file, "image_info_file")["images"]
    src = image_info_file or object_annotations_file
    items = []
    for im in images:
        image_id = _field(im, "id", src, "image")
        objects = by_image.get(image_id, [])
        if skip_empty and not objects:
            continue
        items.append(
            {
                "id": image_id,
                "file_name": str(_field(im, "file_name", src, "image")),
                "height": int(_field(im, "height", src, "image")),
                "width": int(_field(im, "width", src, "image")),
                "objects": objects,
            }
        )
    out_dir = os.path.dirname(output_file_prefix) or "."
    base = os.path.basename(output_file_prefix)
    specs = [
        ShardSpec(
            base,
            i,
            num_shards,
            os.path.join(out_dir, shard_name(base, i, num_shards, ".tfrecord")),
            chunk,
        )
        for i, chunk in enumerate(round_robin(items, num_shards))
    ]
    counters["images_in_json"] = len(images)
    counters["images_planned"] = len(items)
    return specs, categories, counters


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
    specs, categories, plan_counters = plan_coco(
        image_dirs,
        object_annotations_file,
        output_file_prefix,
        num_shards=num_shards,
        include_masks=include_masks,
        skip_empty=skip_empty,
        image_info_file=image_info_file,
    )
    out_dir = os.path.dirname(output_file_prefix) or "."
    base = os.path.basename(output_file_prefix)
    tf.io.gfile.makedirs(out_dir)
    label_map = {
        "schema": "coco",
        "num_classes": len(categories),
        "categories": [{"id": cid, "name": n, "index": i} for i, (cid, n) in enumerate(categories)],
    }
    _write_label_map(os.path.join(out_dir, "label_map.json"), label_map)
    encoder = CocoEncoder(tuple(image_dirs), tuple(categories), include_masks)
    results = write_shards(specs, encoder, options, label=f"coco {base}")
    header = {
        "builder": "coco",
        "schema": "coco",
        "schema_version": schemas.SCHEMA_VERSION,
        "include_masks": include_masks,
        "skip_empty": skip_empty,
        "planning": plan_counters,
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
