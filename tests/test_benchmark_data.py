"""The benchmarks' generated data folders: reused only when their build finished (the transfer,
detection and photo benchmarks alike), and the SSL benchmark's few-label COCO-like shards are
exactly the first scenes of the full train set."""

import glob
import os

import pytest
import tensorflow as tf

from transfer_tf.benchmarks import ssl as ssl_bench
from transfer_tf.benchmarks import transfer as transfer_bench
from transfer_tf.data import schemas

SIZE = ssl_bench.SSLBenchmarkSize(
    pretrain_classes=2,
    pretrain_per_class=3,
    pretrain_val_per_class=1,
    coco_classes=3,
    coco_train_images=8,
    coco_val_images=4,
    coco_label_fractions=(0.5, 0.25, 0.3),
)


def _features(pattern: str) -> list:
    """The features of every record of the shards `pattern` names."""
    return [
        tf.train.Example.FromString(raw.numpy()).features.feature
        for path in sorted(glob.glob(pattern))
        for raw in tf.data.TFRecordDataset(path)
    ]


def _records(pattern: str) -> dict[str, bytes]:
    """{source id: encoded image} of every record of the shards `pattern` names."""
    return {
        f[schemas.SOURCE_ID].bytes_list.value[0].decode(): f[schemas.ENCODED].bytes_list.value[0]
        for f in _features(pattern)
    }


def _prepare_transfer(work):
    return transfer_bench.prepare_data(work, SIZE.transfer_size())


def _prepare_detection(work):
    from transfer_tf.benchmarks import detection, downstream

    size = detection.DetectionBenchmarkSize(
        classes=2, pretrain_per_class=2, coco_train_images=4, coco_val_images=3,
        raw_image_size=(32, 40),
    )  # fmt: skip
    return downstream.prepare_data(work, size)


def _prepare_photos(work):
    from transfer_tf.benchmarks import transfer_photos
    from transfer_tf.datagen import photos

    photo_dir = os.path.join(work, "photos")
    if not os.path.isdir(photo_dir):
        photos.textured_photos(photo_dir, count=3, side=64)
    size = transfer_photos.PhotoBenchmarkSize(
        image_size=16, train_per_class=2, val_per_class=1, coco_classes=2, coco_train_images=4,
        coco_val_images=3,
    )  # fmt: skip
    return transfer_photos.prepare_data(work, photo_dir, size)


@pytest.mark.parametrize("prepare", [_prepare_transfer, _prepare_detection, _prepare_photos])
def test_a_build_stopped_partway_is_built_again_not_reused(tmp_path, prepare):
    dirs = prepare(str(tmp_path))
    val_shards = glob.glob(os.path.join(dirs["coco"], "val-*"))
    assert val_shards and os.path.exists(os.path.join(dirs["coco"], "label_map.json"))
    # What a build killed after writing the label map and the train split leaves behind.
    for path in [*val_shards, os.path.join(dirs["coco"], "manifest-val.json")]:
        os.remove(path)
    os.remove(os.path.join(dirs["imagenet"], "manifest.json"))
    prepare(str(tmp_path))
    assert sorted(glob.glob(os.path.join(dirs["coco"], "val-*"))) == sorted(val_shards)
    assert os.path.exists(os.path.join(dirs["coco"], "manifest-val.json"))
    assert os.path.exists(os.path.join(dirs["imagenet"], "manifest.json"))


def test_few_label_shards_are_the_first_scenes_of_the_full_train_set(tmp_path):
    # 0.3 of 8 rounds to 2 like 0.25: one folder each for 4 and 2 scenes, the larger first.
    assert ssl_bench.label_counts(SIZE) == [4, 2]
    dirs = transfer_bench.prepare_data(str(tmp_path), SIZE.transfer_size())
    full = _records(os.path.join(dirs["coco"], "train-*"))
    assert len(full) == SIZE.coco_train_images
    first = sorted(full, key=int)
    for count in ssl_bench.label_counts(SIZE):
        shards = ssl_bench.few_label_shards(str(tmp_path), SIZE, count)
        few = _records(os.path.join(shards, "train-*"))
        assert sorted(few, key=int) == first[:count]
        assert all(few[k] == full[k] for k in few)
        cfg = ssl_bench.with_train_shards(
            transfer_bench.transfer_config(SIZE.transfer_size(), dirs["coco"], "scratch"),
            os.path.join(shards, "train-*"),
            count,
        )
        assert cfg.data.num_train_examples == count
        assert cfg.data.eval_pattern == os.path.join(dirs["coco"], "val-*")  # the same val split


def test_in_domain_pool_is_every_train_image_and_scene_unlabeled(tmp_path):
    import json

    dirs = transfer_bench.prepare_data(str(tmp_path), SIZE.transfer_size())
    shards, count = ssl_bench.in_domain_shards(str(tmp_path), SIZE, dirs)
    inet = SIZE.pretrain_classes * SIZE.pretrain_per_class
    assert count == inet + SIZE.coco_train_images

    def images(pattern: str) -> set[bytes]:
        return {f[schemas.ENCODED].bytes_list.value[0] for f in _features(pattern)}

    pool = images(os.path.join(shards, "train-*"))
    # The very files both builders read (same bytes, nothing re-encoded), and nothing else:
    # neither split's validation images.
    train = images(os.path.join(dirs["imagenet"], "train-*"))
    train |= images(os.path.join(dirs["coco"], "train-*"))
    assert train == pool and len(pool) == count
    manifest = json.load(open(os.path.join(shards, "manifest.json")))
    assert manifest["unlabeled"] is True and manifest["num_classes"] == 1
    cfg = ssl_bench.ssl_config(SIZE, dirs["imagenet"], "simclr", (shards, count))
    assert cfg.data.train_pattern == os.path.join(shards, "train-*")
    assert (cfg.data.num_train_examples, cfg.data.num_classes) == (count, 1)
    assert cfg.ssl.method == "simclr"


def test_in_domain_pool_refuses_raw_images_gone_missing(tmp_path):
    """Shards can outlive the raw images they were built from: a pool built from what is left
    would silently be a smaller arm, so the build stops with the folders and counts named."""
    import shutil

    from transfer_tf.errors import UsageError

    dirs = transfer_bench.prepare_data(str(tmp_path), SIZE.transfer_size())
    shutil.rmtree(dirs["coco_train_raw"])
    with pytest.raises(UsageError, match=r"6 train images, expected 14"):
        ssl_bench.in_domain_shards(str(tmp_path), SIZE, dirs)
    pool = os.path.join(str(tmp_path), "tfrecords", "unlabeled_pool")
    assert not transfer_bench.is_built(pool, *transfer_bench.IMAGENET_MANIFESTS)
    # The data folder still counts as built (its shards are whole): only the pool needs the raw.
    assert transfer_bench.prepare_data(str(tmp_path), SIZE.transfer_size()) == dirs
