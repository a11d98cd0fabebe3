"""COCO builder at train2017 scale: streaming plan, workers not forked from the caller, and the
data errors real COCO-style JSON holds (malformed / 4-number polygons, duplicates, test-dev)."""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest
from pycocotools import mask as mask_util
from test_builders_coco import read_coco
from test_builders_rawdata import image_bytes, write

from transfer_tf.data.builders import WriteOptions, build_coco
from transfer_tf.data.builders import coco_json as coco_json_module
from transfer_tf.data.builders.coco_plan import plan_coco
from transfer_tf.data.builders.sharded_writer import Encoded, Encoder, ShardSpec, write_shards
from transfer_tf.errors import UsageError

H, W = 32, 40
CATEGORIES = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]
SQUARE = [4.0, 4.0, 20.0, 4.0, 20.0, 20.0, 4.0, 20.0]  # 16 x 16 pixels


def coco_dir(root, segmentations: list, *, images: list[dict] | None = None) -> tuple[str, dict]:
    """`root/images/*.jpg` (H x W) and `root/instances.json`: image k holds one annotation whose
    segmentation is segmentations[k] (box 4, 4, 16, 16)."""
    images = images or [
        {"id": 100 + k, "file_name": f"{100 + k}.jpg", "height": H, "width": W}
        for k in range(len(segmentations))
    ]
    for k, im in enumerate(images):
        write(str(root / "images" / im["file_name"]), image_bytes(k, (H, W)))
    annotations = [
        {
            "id": 500 + k,
            "image_id": images[k]["id"],
            "category_id": 1,
            "bbox": [4.0, 4.0, 16.0, 16.0],
            "area": 256.0,
            "iscrowd": int(isinstance(seg, dict)),
            "segmentation": seg,
        }
        for k, seg in enumerate(segmentations)
    ]
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    path = str(root / "instances.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path, data


def build(root, ann: str, name: str = "train", **kw) -> dict:
    manifest = build_coco([str(root / "images")], ann, str(root / "out" / name), **kw)
    return json.loads(open(manifest).read())


def test_malformed_segmentation_skips_that_image_with_the_reason(tmp_path):
    ann, data = coco_dir(
        tmp_path,
        [
            [SQUARE],
            [[1.0, 2.0, 3.0, 4.0, 5.0]],  # odd number of coordinates
            {"size": [H, W], "counts": [0, H * W + 5]},  # runs past the mask: memory corruption
            [[1.0, "x", 3.0, 4.0, 5.0, 6.0]],
            "polygon",
        ],
    )
    manifest = build(tmp_path, ann, include_masks=True)
    records = read_coco(str(tmp_path / "out" / "train-*"))
    assert sorted(records) == [100]
    np.testing.assert_array_equal(records[100]["masks"][0][4:20, 4:20], 1)
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"101.jpg", "102.jpg", "103.jpg", "104.jpg"}
    for k, why in ((101, "5 numbers"), (102, "add up to"), (103, "non-number"), (104, "str")):
        assert reasons[f"{k}.jpg"].startswith(f"annotation {400 + k}: malformed segmentation")
        assert why in reasons[f"{k}.jpg"]
    # Without masks the segmentation is never read: every image is written.
    build(tmp_path, ann, name="boxes")
    assert sorted(read_coco(str(tmp_path / "out" / "boxes-*"))) == [100, 101, 102, 103, 104]


def test_four_number_polygon_is_dropped_not_read_as_a_box(tmp_path):
    # pycocotools reads a first polygon of 4 numbers as [x, y, w, h] boxes for the whole object.
    ann, _ = coco_dir(tmp_path, [[[1.0, 1.0, 30.0, 30.0], SQUARE], [[1.0, 1.0, 30.0, 30.0]]])
    manifest = build(tmp_path, ann, include_masks=True)
    records = read_coco(str(tmp_path / "out" / "train-*"))
    square = mask_util.decode(mask_util.frPyObjects([SQUARE], H, W))[..., 0]
    np.testing.assert_array_equal(records[100]["masks"][0], square)
    assert records[101]["masks"][0].sum() == 0  # a line covers no pixel
    assert records[101]["ids"] == [1]  # the object (its box) stays
    assert manifest["counters"]["degenerate_polygons_dropped"] == 2


def test_duplicate_image_ids_and_file_names_are_skipped_with_reasons(tmp_path):
    images = [
        {"id": 100, "file_name": "a.jpg", "height": H, "width": W},
        {"id": 101, "file_name": "b.jpg", "height": H, "width": W},
        {"id": 100, "file_name": "c.jpg", "height": H, "width": W},  # id of a.jpg again
        {"id": 103, "file_name": "b.jpg", "height": H, "width": W},  # file of 101 again
    ]
    ann, _ = coco_dir(tmp_path, [[SQUARE]] * 4, images=images)
    manifest = build(tmp_path, ann, num_shards=2)
    records = read_coco(str(tmp_path / "out" / "train-*"))
    assert sorted(records) == [100, 101]
    assert records[100]["shard"] == "train-00000-of-00002.tfrecord"  # image i -> shard i % 2
    assert len(records[100]["ids"]) == 2  # both annotations naming id 100, written once
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {
        "c.jpg": "duplicate image id 100 (images[0] kept)",
        "b.jpg": "duplicate file_name (image id 101 kept)",
    }
    assert manifest["planning"]["duplicate_image_ids"] == 1
    assert manifest["planning"]["duplicate_file_names"] == 1


def test_image_info_only_file_test_dev(tmp_path):
    ann, data = coco_dir(tmp_path, [[SQUARE], [SQUARE]])
    build(tmp_path, ann)  # train: label_map.json with two categories
    info = str(tmp_path / "image_info_test-dev.json")
    with open(info, "w") as f:
        json.dump({"info": {}, "images": data["images"], "categories": CATEGORIES}, f)
    for flag in ("image_info_file", "object_annotations_file"):
        manifest = build_coco(
            [str(tmp_path / "images")],
            info if flag == "object_annotations_file" else "",
            str(tmp_path / "out" / flag),
            **({"image_info_file": info} if flag == "image_info_file" else {}),
        )
        manifest = json.loads(open(manifest).read())
        records = read_coco(str(tmp_path / "out" / f"{flag}-*"))
        assert sorted(records) == [100, 101] and all(not r["ids"] for r in records.values())
        assert manifest["has_annotations"] is False
        assert [c["id"] for c in manifest["label_map"]] == [1, 3]
    with pytest.raises(UsageError, match="no 'annotations'"):
        build_coco([str(tmp_path / "images")], info, str(tmp_path / "x" / "t"), skip_empty=True)


def test_plan_streams_the_json_and_holds_no_segmentation(tmp_path, monkeypatch):
    big = [[float(v % 30) for v in range(4000)]]  # 4,000 numbers per object: the bulk of the file
    ann, _ = coco_dir(tmp_path, [big] * 80)
    size = os.path.getsize(ann)
    monkeypatch.setattr(coco_json_module, "_CHUNK", 2**16)
    tracemalloc.start()
    try:
        plan = plan_coco([str(tmp_path / "images")], ann, str(tmp_path / "out" / "t"), num_shards=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # json.load would hold every coordinate as a Python float (~5x the file); the stream holds
    # one read window (64 KiB here) plus one annotation at a time.
    assert size > 2**20 and peak < size / 3, (peak, size)
    assert len(pickle.dumps(plan.specs)) < 20_000
    assert plan.specs[1].items[0]["annotations"][0][1] > 4000  # a byte range, not the numbers


def test_small_read_window_and_utf8_give_the_same_plan_and_shards(tmp_path, monkeypatch):
    images = [
        {"id": 100 + k, "file_name": f"ünï_{k}.jpg", "height": H, "width": W} for k in range(5)
    ]
    ann, _ = coco_dir(tmp_path, [[SQUARE]] * 5, images=images)
    ref = plan_coco([str(tmp_path / "images")], ann, str(tmp_path / "out" / "t"), num_shards=2)
    monkeypatch.setattr(coco_json_module, "_CHUNK", 7)  # every value straddles windows
    small = plan_coco([str(tmp_path / "images")], ann, str(tmp_path / "out" / "t"), num_shards=2)
    assert [list(s.items) for s in small.specs] == [list(s.items) for s in ref.specs]
    build(tmp_path, ann, include_masks=True)
    records = read_coco(str(tmp_path / "out" / "train-*"))
    assert sorted(records) == [100, 101, 102, 103, 104]
    assert all(r["ids"] == [1] and r["masks"][0].sum() > 200 for r in records.values())


def test_every_read_window_size_parses_the_same(tmp_path, monkeypatch):
    data = {
        "info": {"v": [1.5e-05, -2e10, True, None]},
        "images": [{"id": 7, "file_name": "ä.jpg", "height": 2, "width": 3, "s": 2.5e-05}],
        "annotations": [
            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 1.25e00, 1], "area": 1e-3},
            {"image_id": 7, "category_id": 2, "bbox": [1, 0, 1, 1], "segmentation": [[1e-7] * 6]},
        ],
        "categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "ä"}],
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    raw = path.read_bytes()
    for chunk in range(1, 48):  # a window edge falls inside every token at some size
        monkeypatch.setattr(coco_json_module, "_CHUNK", chunk)
        got = coco_json_module.read_coco_json(str(path), "object_annotations_file")
        assert got.images == [(7, "ä.jpg", 2, 3)] and got.categories == [(1, "ä"), (2, "b")]
        pieces = [
            json.loads(raw[o : o + n]) for o, n in zip(got.ann_offset, got.ann_length, strict=True)
        ]
        assert pieces == data["annotations"], chunk


def test_malformed_json_names_the_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n {"id": 1, "file_name": "a.jpg", "height": 2, "width": 2},\n x]}')
    (tmp_path / "images").mkdir()
    with pytest.raises(UsageError, match=r"bad.json line 3: not valid JSON"):
        build_coco([str(tmp_path / "images")], str(bad), str(tmp_path / "out" / "t"))


# Set in the test process only: a worker forked from it would see True.
_INHERITED = False


class _ReportsInheritance(Encoder):
    def encode(self, item):
        return Encoded(b"x", str(item), counters={"forked_from_caller": int(_INHERITED)})


def test_workers_are_not_forked_from_the_calling_process(tmp_path):
    global _INHERITED
    _INHERITED = True
    try:
        specs = [
            ShardSpec("t", i, 2, str(tmp_path / f"t-{i}"), [f"item{i}", f"more{i}"])
            for i in range(2)
        ]
        results = write_shards(specs, _ReportsInheritance(), WriteOptions(num_workers=2))
    finally:
        _INHERITED = False
    assert [results[f"t-{i}"]["records"] for i in range(2)] == [2, 2]
    assert [results[f"t-{i}"]["counters"]["forked_from_caller"] for i in range(2)] == [0, 0]
