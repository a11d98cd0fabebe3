"""Synthetic raw datasets: real ImageNet/COCO layouts, valid JPEGs and JSON, deterministic."""

import glob
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from transfer_tf.datagen import shapes
from transfer_tf.errors import UsageError


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_imagenet_like_layout(tmp_path):
    ds = shapes.write_imagenet_like(
        str(tmp_path / "inet"), num_classes=4, train_per_class=3, val_per_class=2,
        image_size_range=(40, 70), seed=3,
    )  # fmt: skip
    assert sorted(os.listdir(ds.train_dir)) == list(ds.wnids) == [f"n{k:08d}" for k in range(4)]
    for w in ds.wnids:
        files = sorted(os.listdir(os.path.join(ds.train_dir, w)))
        assert files == sorted(f"{w}_{n}.JPEG" for n in range(3))
    val_files = sorted(os.listdir(ds.val_dir))
    assert val_files == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 9)]
    labels = open(ds.val_labels_file).read().split()
    assert labels == [ds.wnids[k] for k in ds.val_labels]
    # Every class appears val_per_class times.
    assert sorted(labels) == sorted(list(ds.wnids) * 2)
    names = [line.split("\t") for line in open(ds.synset_names_file).read().splitlines()]
    assert [n[0] for n in names] == list(ds.wnids)
    assert [n[1] for n in names] == [shapes.class_name(k) for k in range(4)]
    for path in glob.glob(os.path.join(ds.root, "*", "**", "*.JPEG"), recursive=True):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert 40 <= im.width <= 70 and 40 <= im.height <= 70
    assert ds.num_train == 12 and ds.num_val == 8


def test_imagenet_like_is_deterministic_and_seed_dependent(tmp_path):
    kw = dict(num_classes=3, train_per_class=2, val_per_class=2, image_size_range=(32, 48))
    a = shapes.write_imagenet_like(str(tmp_path / "a"), seed=1, **kw)
    b = shapes.write_imagenet_like(str(tmp_path / "b"), seed=1, **kw)
    c = shapes.write_imagenet_like(str(tmp_path / "c"), seed=2, **kw)
    assert _digest(a.root) == _digest(b.root)
    assert _digest(a.root) != _digest(c.root)


def test_classes_differ_visually(tmp_path):
    # The object's colour must follow the class: the mean of saturated pixels differs by class.
    ds = shapes.write_imagenet_like(
        str(tmp_path), num_classes=2, train_per_class=1, val_per_class=1, seed=0
    )

    def saturated_mean(k):
        path = os.path.join(ds.train_dir, ds.wnids[k], f"{ds.wnids[k]}_0.JPEG")
        arr = np.asarray(Image.open(path)).astype(np.float32)
        sat = arr.max(axis=2) - arr.min(axis=2)
        return arr[sat > 80].mean(axis=0)

    red, green = saturated_mean(0), saturated_mean(1)  # red circle, green square
    assert red[0] > red[1] + 80 and green[1] > green[0] + 80


def test_coco_like_json_and_images(tmp_path):
    ids = [2, 5, 11, 40]
    ds = shapes.write_coco_like(
        str(tmp_path / "coco"), num_images=12, category_ids=ids, objects_per_image=(2, 3), seed=0
    )
    doc = json.load(open(ds.annotations_file))
    assert {c["id"] for c in doc["categories"]} == set(ids)
    assert [c["name"] for c in doc["categories"]] == [shapes.class_name(i) for i in range(4)]
    assert len(doc["images"]) == 12 and ds.num_annotations == len(doc["annotations"])
    by_id = {im["id"]: im for im in doc["images"]}
    per_image = {}
    for ann in doc["annotations"]:
        im = by_id[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= im["width"] + 1e-6 and y + h <= im["height"] + 1e-6
        assert ann["category_id"] in ids and ann["iscrowd"] == 0
        poly = ann["segmentation"][0]
        assert len(poly) % 2 == 0 and len(poly) >= 6
        assert 0 < ann["area"] <= w * h + 1e-3
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    # Several objects per image (placement may drop one at most rarely).
    assert sum(per_image.values()) >= 2 * 12 * 0.9
    assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"])
    for im in doc["images"]:
        path = os.path.join(ds.image_dir, im["file_name"])
        with Image.open(path) as pil:
            assert pil.format == "JPEG" and pil.size == (im["width"], im["height"])


def test_coco_like_is_deterministic(tmp_path):
    kw = dict(num_images=5, category_ids=[1, 3, 8], objects_per_image=(1, 3))
    a = shapes.write_coco_like(str(tmp_path / "a"), seed=4, **kw)
    b = shapes.write_coco_like(str(tmp_path / "b"), seed=4, **kw)
    assert _digest(a.root) == _digest(b.root)


@pytest.mark.parametrize(
    "kwargs",
    [dict(category_ids=[]), dict(category_ids=[1, 1]), dict(category_ids=[0, 2]),
     dict(category_ids=list(range(1, 40))), dict(objects_per_image=(3, 1))],
)  # fmt: skip
def test_coco_like_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(UsageError):
        shapes.write_coco_like(str(tmp_path / "x"), num_images=1, **kwargs)


def test_imagenet_like_rejects_too_many_classes(tmp_path):
    with pytest.raises(UsageError, match="num_classes"):
        shapes.write_imagenet_like(str(tmp_path / "x"), num_classes=shapes.MAX_CLASSES + 1)
