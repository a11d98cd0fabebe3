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

ADAM_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "configs", "coco_multilabel_resnet50_adam.yaml"
)


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
                # which the recipe tests cover) and the Adam recipe as an --arm_config arm.
                "--arms=shipped,scratch",
                f"--arm_config=adam:{ADAM_CONFIG}",
            ]
        ],
        timeout=480,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    run, summary = lines[0], lines[1]["summary"]
    arms = ("shipped", "scratch", "adam")
    assert set(run["runs"]) == set(arms)
    # The shipped recipe's own length on 16 images at batch 8 (2 + 10 epochs), for every arm.
    assert run["budget_steps"] == 24
    assert all(r["steps"] == 24 and 0 <= r["mAP"] <= 1 for r in run["runs"].values())
    assert 0 <= run["pretrain"]["top_1_accuracy"] <= 1 and run["pretrain"]["steps"] == 5
    growth = run["pretrain"]["kernel_norm_growth"]
    assert set(growth) == {"stem", "stage1", "stage2", "stage3", "stage4"}
    assert all(v > 0 for v in growth.values())
    assert run["data"]["pretrain_classes"] == 5 and run["data"]["coco_classes"] == 3
    assert set(summary["arms"]) == set(arms) and "shipped_minus_scratch" in summary
    # The shards came from the real builders (their manifests and the COCO label map).
    tfr = work / "data_s0" / "tfrecords"
    assert any(n.startswith("manifest") for n in os.listdir(tfr / "imagenet"))
    # A non-default labelled set (16 / 8 scenes) gets shards of its own beside the default's.
    assert any(n.startswith("manifest") for n in os.listdir(tfr / "coco_n16v8"))
    assert sorted(os.listdir(work / "runs")) == [
        "adam_n16v8_s0",
        "pretrain_s0",
        "scratch_n16v8_s0",
        "shipped_n16v8_s0",
    ]
    label_map = json.load(open(tfr / "coco_n16v8" / "label_map.json"))
    assert len(label_map) >= 3


# -- how the photo benchmark builds its configs (no training) ---------------------------------


def test_sweeps_get_their_own_runs_and_share_the_seeds_pretraining():
    from transfer_tf.benchmarks import transfer_photos as pb

    size = pb.PhotoBenchmarkSize(seed=2)
    assert pb.run_name(size, "shipped") == "shipped_s2"  # the default keeps its old names
    fewer = pb.PhotoBenchmarkSize(seed=2, coco_train_images=60, budget_factor=0.5)
    assert pb.run_name(fewer, "scratch") == "scratch_n60v120_b0.5_s2"
    assert pb.run_name(pb.PhotoBenchmarkSize(budget_factor=4), "shipped") == "shipped_b4_s0"


def _dirs():
    return {
        "imagenet": "/tmp/unused_inet",
        "coco": "/tmp/unused_coco",
        "pretrain_classes": 11,
        "coco_classes": 8,
    }


def test_pretraining_trains_at_the_recipes_own_learning_rate_unless_told():
    """Issue 29: the benchmark pretrained at 0.2 at batch 32, 16x configs/imagenet_resnet50.yaml's
    0.1 per 256 images; by default it now runs the recipe's LR, scaled to its batch."""
    from transfer_tf.benchmarks import transfer_photos as pb
    from transfer_tf.training.schedules import peak_learning_rate

    size = pb.PhotoBenchmarkSize(batch_size=32)
    cfg = pb.pretrain_config(size, _dirs())
    recipe = pb.load_config(pb.PRETRAIN_CONFIG).train
    assert cfg.train.base_learning_rate == recipe.base_learning_rate
    assert cfg.train.warmup_epochs == 1.0  # min(the recipe's 5 of 90 epochs, one epoch)
    told = pb.pretrain_config(pb.PhotoBenchmarkSize(batch_size=32, pretrain_peak_lr=0.2), _dirs())
    assert peak_learning_rate(told.train.base_learning_rate, 32, "sgd") == pytest.approx(0.2)
    adam = pb.pretrain_config(
        pb.PhotoBenchmarkSize(pretrain_config="configs/imagenet_resnet50_adam.yaml"), _dirs()
    )
    assert adam.train.optimizer == "adam" and adam.train.warmup_epochs == 0.0


def test_budget_factor_finetune_size_and_arm_configs_shape_every_arm():
    from transfer_tf.benchmarks import transfer_photos as pb
    from transfer_tf.transfer import phases as phases_lib
    from transfer_tf.transfer import schedule

    size = pb.PhotoBenchmarkSize(
        budget_factor=2.0,
        finetune_image_size=64,
        extra_arm_configs={"adam": "configs/coco_multilabel_resnet50_adam.yaml"},
    )
    shipped = pb.shipped_config(size, _dirs())
    assert shipped.data.image_size == 64
    # 240 scenes at batch 32: (2 + 10 epochs) x 2 = 180 steps.
    budget = schedule.total_steps(phases_lib.resolve_phases(shipped))
    assert budget == 180
    adam = pb.arm_config(size, _dirs(), "adam", budget)
    assert adam.transfer.optimizer == "adam" and adam.data.image_size == 64
    assert schedule.total_steps(phases_lib.resolve_phases(adam)) == budget
    assert pb.is_scratch_arm("scratch") and pb.is_scratch_arm("scratch_128")
    assert not pb.is_scratch_arm("shipped") and not pb.is_scratch_arm("scratchy")


def test_segmentation_reads_the_photo_scenes_of_any_set_size(tmp_path):
    # The segmentation benchmark builds masked shards from the photo benchmark's raw scenes; at a
    # non-default scene count those live in their own folder (coco_raw_dir names it for both).
    from transfer_tf.benchmarks import segmentation as seg_bench

    photo_dir = tmp_path / "photos"
    photo_sets.textured_photos(str(photo_dir), count=4, side=96)
    size = seg_bench.SegmentationBenchmarkSize(
        pretrain_image_size=32, classes=2, coco_train_images=6, coco_val_images=4
    )
    dirs = seg_bench.prepare_photo_data(str(tmp_path / "work"), str(photo_dir), size)
    assert dirs["coco"].endswith("coco_n6v4_masks")
    assert any(n.startswith("manifest") for n in os.listdir(dirs["coco"]))
