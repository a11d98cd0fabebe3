"""The real-photo transfer benchmark end to end on a tiny size: photographs -> ImageNet and COCO
dumps -> the real builders -> pretraining -> the shipped recipe and the three reference arms, one
JSON line per seed and a summary (pipelines/benchmark_transfer.py --data=photos).

Photographs: procedurally textured images (`photo_sets.textured_photos`), so the test needs
neither the network nor the wheels' sample images."""

import json
import os
import zipfile

import pytest
from binary_harness import run_cases

from transfer_tf.datagen import photos as photo_sets


def test_extract_wheel_photos(tmp_path):
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("skimage/data/astronaut.png", b"png bytes")
        z.writestr("skimage/data/text.png", b"not a photo we want")
        z.writestr("pkg/sample_data/grace_hopper.jpg", b"jpg bytes")
    paths = photo_sets.extract_wheel_photos([str(wheel)], str(tmp_path / "out"))
    assert [os.path.basename(p) for p in paths] == ["astronaut.png", "grace_hopper.jpg"]
    assert open(paths[0], "rb").read() == b"png bytes"


def test_photo_coco_dump_has_exact_boxes_and_empty_images(tmp_path):
    from PIL import Image

    photo_dir = tmp_path / "photos"
    photo_sets.textured_photos(str(photo_dir), count=4, side=96)
    photos = photo_sets.load_photos(str(photo_dir))
    coco = photo_sets.write_photo_coco(
        str(tmp_path / "coco"),
        photos[:2],
        photos[2:],
        category_ids=[3, 7],
        num_images=30,
        empty_fraction=0.3,
        image_size_range=(64, 80),
    )
    doc = json.load(open(coco.annotations_file))
    with_objects = {a["image_id"] for a in doc["annotations"]}
    assert 0 < len(with_objects) < 30  # some images are empty
    sizes = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        assert a["category_id"] in (3, 7)
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert 0.2 * min(width, height) - 1 <= max(w, h) <= 0.5 * min(width, height) + 1
    for im in doc["images"]:
        with Image.open(os.path.join(coco.image_dir, im["file_name"])) as f:
            assert f.size == (im["width"], im["height"])


@pytest.mark.slow
def test_photo_benchmark_runs_its_arms_through_the_builders(tmp_path):
    photo_dir = tmp_path / "photos"
    photo_sets.textured_photos(str(photo_dir), count=5, side=128)
    work = tmp_path / "work"
    (result,) = run_cases(
        "pipelines.benchmark_transfer:run",
        [
            [
                "--data=photos",
                f"--photo_dir={photo_dir}",
                f"--work_dir={work}",
                "--model=resnet10",
                "--image_size=32",
                "--batch_size=8",
                "--pretrain_epochs=1",
                "--train_per_class=8",
                "--val_per_class=2",
                "--coco_classes=3",
                "--coco_train_images=16",
                "--coco_val_images=8",
                # Two of the four standard arms (the others differ only in their overrides,
                # which the recipe tests cover) and one extra arm: a third of the time.
                "--arms=shipped,scratch",
                "--arm=zero_head:transfer.head_init=zero",
            ]
        ],
        timeout=480,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    run, summary = lines[0], lines[1]["summary"]
    arms = ("shipped", "scratch", "zero_head")
    assert set(run["runs"]) == set(arms)
    # The shipped recipe's own length on 16 images at batch 8 (2 + 10 epochs), for every arm.
    assert run["budget_steps"] == 24
    assert all(r["steps"] == 24 and 0 <= r["mAP"] <= 1 for r in run["runs"].values())
    assert 0 <= run["pretrain"]["top_1_accuracy"] <= 1 and run["pretrain"]["steps"] == 5
    assert run["data"]["pretrain_classes"] == 5 and run["data"]["coco_classes"] == 3
    assert set(summary["arms"]) == set(arms) and "shipped_minus_scratch" in summary
    # The shards came from the real builders (their manifests and the COCO label map).
    tfr = work / "data_s0" / "tfrecords"
    assert any(n.startswith("manifest") for n in os.listdir(tfr / "imagenet"))
    assert any(n.startswith("manifest") for n in os.listdir(tfr / "coco"))
    label_map = json.load(open(tfr / "coco" / "label_map.json"))
    assert len(label_map) >= 3
