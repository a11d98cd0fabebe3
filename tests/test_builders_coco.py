"""COCO builder: boxes, ids, masks and counts compared with the source JSON; bad input."""

from __future__ import annotations

import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_builders_rawdata import make_coco

from transfer_tf.data import schemas
from transfer_tf.data.builders import WriteOptions, build_coco
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_coco(pattern: str) -> dict[int, dict]:
    out = {}
    for path in sorted(glob.glob(pattern)):
        for rec in tf.data.TFRecordDataset(path):
            f = tf.train.Example.FromString(rec.numpy()).features.feature
            image = tf.io.decode_jpeg(f[schemas.ENCODED].bytes_list.value[0])

            def floats(key, f=f):
                return list(f[key].float_list.value)

            out[int(f[schemas.SOURCE_ID].bytes_list.value[0])] = {
                "shard": os.path.basename(path),
                "shape": tuple(image.shape),
                "hw": (f[schemas.HEIGHT].int64_list.value[0], f[schemas.WIDTH].int64_list.value[0]),
                "boxes": np.stack(
                    [
                        floats(schemas.BBOX_YMIN),
                        floats(schemas.BBOX_XMIN),
                        floats(schemas.BBOX_YMAX),
                        floats(schemas.BBOX_XMAX),
                    ],
                    axis=-1,
                ).reshape(-1, 4),
                "ids": list(f[schemas.OBJECT_LABEL].int64_list.value),
                "text": [t.decode() for t in f[schemas.OBJECT_TEXT].bytes_list.value],
                "crowd": list(f[schemas.OBJECT_IS_CROWD].int64_list.value),
                "masks": [
                    np.array(Image.open(io.BytesIO(m)))
                    for m in f[schemas.OBJECT_MASK].bytes_list.value
                ],
            }
    return out


def valid_annotations(data: dict, image_id: int) -> list[dict]:
    im = next(i for i in data["images"] if i["id"] == image_id)
    anns = [a for a in data["annotations"] if a["image_id"] == image_id]
    return [
        a
        for a in anns
        if a["bbox"][2] > 0
        and a["bbox"][3] > 0
        and a["bbox"][0] + a["bbox"][2] <= im["width"]
        and a["bbox"][1] + a["bbox"][3] <= im["height"]
    ]


def test_coco_with_masks_matches_the_json(tmp_path):
    raw = tmp_path / "coco"
    src = make_coco(str(raw))
    data = src["json"]
    manifest_path = build_coco(
        [str(raw / "images")],
        str(raw / "instances.json"),
        str(tmp_path / "out" / "train"),
        num_shards=2,
        include_masks=True,
        options=WriteOptions(num_workers=2),
    )
    records = read_coco(str(tmp_path / "out" / "train-*-of-00002.tfrecord"))
    # All good images (the one without annotations included), none of the bad ones.
    assert sorted(records) == sorted(src["good_ids"])
    names = {c["id"]: c["name"] for c in data["categories"]}
    order = [im["id"] for im in data["images"]]
    for image_id, r in records.items():
        im = next(i for i in data["images"] if i["id"] == image_id)
        h, w = im["height"], im["width"]
        assert r["shape"] == (h, w, 3) and r["hw"] == (h, w)
        # Model Garden's assignment: image i of the JSON goes to shard i % num_shards.
        assert r["shard"] == f"train-{order.index(image_id) % 2:05d}-of-00002.tfrecord"
        anns = valid_annotations(data, image_id)
        assert r["ids"] == [a["category_id"] for a in anns]
        assert r["text"] == [names[a["category_id"]] for a in anns]
        assert r["crowd"] == [a["iscrowd"] for a in anns]
        expect = np.array(
            [
                [y / h, x / w, (y + bh) / h, (x + bw) / w]
                for x, y, bw, bh in (a["bbox"] for a in anns)
            ]
        ).reshape(-1, 4)
        np.testing.assert_allclose(r["boxes"], expect, rtol=1e-6)
        assert len(r["masks"]) == len(anns)
        for mask, a in zip(r["masks"], anns, strict=True):
            assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 1}
            if not a["iscrowd"]:  # a filled rectangle polygon: the mask area is close to the box
                assert abs(int(mask.sum()) - a["area"]) <= 2 * (a["bbox"][2] + a["bbox"][3]) + 4
            else:
                assert int(mask.sum()) == 600
    label_map = read_label_map(str(tmp_path / "out" / "label_map.json"))
    assert label_map.id_to_index == {1: 0, 18: 1, 90: 2}
    manifest = json.loads(open(manifest_path).read())
    assert manifest["counters"]["degenerate_boxes_dropped"] == 2
    assert manifest["counters"]["images_without_objects"] == 1
    assert manifest["splits"]["train"]["records"] == len(records)
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"missing.jpg", "truncated.jpg", "../../etc/passwd"}
    assert "outside --image_dir" in reasons["../../etc/passwd"]
    assert [c["file"] for c in manifest["converted"]] == ["000000001003.jpg"]
    per_class = manifest["splits"]["train"]["per_class"]
    assert sum(per_class.values()) == sum(len(r["ids"]) for r in records.values())


def test_coco_skip_empty_and_bad_json(tmp_path):
    raw = tmp_path / "coco"
    make_coco(str(raw))
    build_coco(
        [str(raw / "images")],
        str(raw / "instances.json"),
        str(tmp_path / "out" / "val"),
        num_shards=1,
        skip_empty=True,
    )
    records = read_coco(str(tmp_path / "out" / "val-*"))
    assert 1002 not in records and all(r["ids"] for r in records.values())
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(UsageError, match="not valid JSON"):
        build_coco([str(raw / "images")], str(bad), str(tmp_path / "x" / "train"))
    with pytest.raises(UsageError, match="is not a directory"):
        build_coco([str(tmp_path / "nope")], str(raw / "instances.json"), str(tmp_path / "x" / "t"))


@pytest.mark.slow
def test_coco_binary_malformed_json_exits_2_with_one_error_line(tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.make_coco_tfrecords",
            f"--image_dir={tmp_path}",
            f"--object_annotations_file={bad}",
            f"--output_file_prefix={tmp_path}/out/train",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    # TensorFlow's own start-up lines (cuda/oneDNN notices) may precede ours.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --object_annotations_file {bad} line 1: not valid JSON"]
    assert not os.path.exists(tmp_path / "out")
