"""COCO planning: which image goes to which shard, and where its annotations are in the JSON.

`plan_coco` streams the JSON file(s) once (`coco_json`), groups the annotations of known categories
by image, marks duplicate image ids / file names as skipped, drops empty images if asked, and
deals image i to shard i % num_shards (Model Garden's order). Each shard's items are a
`CocoShardItems`: numpy arrays of byte ranges, never a segmentation, so the plan of train2017
(118k images, 860k annotations) is ~20 MB pickled instead of the GBs `json.load` would hold.

Example:
    plan = plan_coco(["/coco/train2017"], "/coco/annotations/instances_train2017.json",
                     "/out/train", num_shards=256)
    plan.specs[0].items[0]   # {"id", "file_name", "height", "width", "annotations": [[off, len]]}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from absl import logging

from transfer_tf.data.builders.coco_json import CocoJson, read_annotation, read_coco_json
from transfer_tf.data.builders.sharded_writer import ShardSpec, round_robin, shard_name
from transfer_tf.errors import UsageError


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
    strict: bool = False,
) -> CocoPlan:
    """Streams the JSON file(s) and assigns images to shards (image i -> shard i % num_shards).

    Holds per image its info and the byte ranges of its annotations, never a segmentation.
    Duplicate image ids and file names are planned as skipped items (the first one is kept).
    Annotations whose `image_id` is not in the images list or whose `category_id` is not in the
    categories cannot be written: they are counted (`annotations_with_unknown_image`,
    `annotations_with_unknown_category`) and logged with the first few ids, or with `strict`
    refused (UsageError naming the file and those ids).
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
    counters["annotations_with_unknown_image"] = _check_dangling(
        ann, info, categories, image_info_file or object_annotations_file, strict
    )
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


_SHOWN = 3  # offending annotations named per kind in the log line / error


def _check_dangling(
    ann: CocoJson,
    info: CocoJson,
    categories: list[tuple[int, str]],
    images_file: str,
    strict: bool,
) -> int:
    """Finds annotations naming an image id not in `info.images` or a category id not in
    `categories`; logs them (the first few by annotation id) or, with `strict`, raises.

    Returns the number of annotations with an unknown image (the unknown-category count is the
    caller's). Model Garden's tool drops both silently; a mismatched JSON (an annotations file of
    another split, a filtered images list) should at least be seen.
    """
    if not len(ann.ann_image):
        return 0
    known_images = {image_id for image_id, *_ in info.images}
    ids_by_code = list(ann.image_codes)  # insertion order = code order
    unknown_code = np.array([i not in known_images for i in ids_by_code], bool)
    code = np.frombuffer(ann.ann_image, np.int64)
    cat = np.frombuffer(ann.ann_category, np.int64)
    bad_image = np.flatnonzero(unknown_code[code])
    bad_category = np.flatnonzero(~np.isin(cat, np.array([c for c, _ in categories], np.int64)))
    if not len(bad_image) and not len(bad_category):
        return 0

    def annotation_id(j: int) -> Any:
        a = read_annotation(ann.path, int(ann.ann_offset[j]), int(ann.ann_length[j]))
        return a.get("id", f"#{j}")

    def listed(indices, key: str, value) -> str:
        """The first few offending annotations as `annotation ID -> KEY VALUE, ...`."""
        shown = ", ".join(
            f"annotation {annotation_id(j)} -> {key} {value(j)}" for j in indices[:_SHOWN]
        )
        return shown + (", ..." if len(indices) > _SHOWN else "")

    parts = []
    if len(bad_image):
        parts.append(
            f"{len(bad_image)} annotation(s) name an image_id that is not in the 'images' of "
            f"{images_file} ({listed(bad_image, 'image_id', lambda j: repr(ids_by_code[code[j]]))})"
        )
    if len(bad_category):
        parts.append(
            f"{len(bad_category)} annotation(s) name a category_id that is not in 'categories' "
            f"({listed(bad_category, 'category_id', lambda j: int(cat[j]))})"
        )
    text = f"{ann.path}: " + "; ".join(parts)
    if strict:
        raise UsageError(f"--strict: {text}")
    logging.warning("%s; dropped them (counted in the manifest's 'planning')", text)
    return int(len(bad_image))
