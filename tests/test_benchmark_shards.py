"""make_benchmark_shards: shard layout, parsable ImageNet-style records, reproducibility, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer_tf.benchmarks.input_shards import write_benchmark_shards
from transfer_tf.data import schemas
from transfer_tf.data.decoders import make_decoder
from transfer_tf.errors import UsageError

SHARDS = [f"train-{s:05d}-of-00003" for s in range(3)]


@pytest.fixture
def photo_dir(tmp_path):
    """Three smooth-gradient 'photos' (300x200, one portrait) in the formats the writer reads."""
    folder = tmp_path / "photos"
    folder.mkdir()
    y, x = np.mgrid[0:200, 0:300]
    for i, name in enumerate(["a.png", "b.jpg", "c.JPEG"]):
        rgb = np.stack([x * 255 // 299, y * 255 // 199, (x + y + 80 * i) % 256], -1)
        image = Image.fromarray(rgb.astype(np.uint8))
        if i == 2:
            image = image.transpose(Image.Transpose.ROTATE_90)
        image.save(folder / name)
    (folder / "notes.txt").write_text("not a photo")
    return str(folder)


def _records(folder):
    return [
        r.numpy() for name in SHARDS for r in tf.data.TFRecordDataset(os.path.join(folder, name))
    ]


@pytest.mark.parametrize("kind", ["photos", "noise"])
def test_writes_parsable_imagenet_style_shards(tmp_path, photo_dir, kind):
    out = tmp_path / "out"
    stats = write_benchmark_shards(
        str(out), 12, kind=kind, photo_dir=photo_dir, num_shards=3, long_side=120
    )
    assert sorted(os.listdir(out)) == SHARDS  # no leftover temporaries
    assert stats["kind"] == kind and stats["num_images"] == 12 and stats["num_shards"] == 3
    assert stats["mean_bytes"] > 0 and stats["bytes_per_pixel"] > 0
    records = _records(out)
    assert len(records) == 12
    decode = make_decoder("classification").decode
    for serialized in records:
        tensors = decode(tf.constant(serialized))
        label = int(tensors["label"])
        assert 1 <= label <= 1000
        image = tf.io.decode_jpeg(tensors["image"]).numpy()
        assert max(image.shape[:2]) == 120 and image.shape[2] == 3
        feature = tf.train.Example.FromString(serialized).features.feature
        assert feature[schemas.HEIGHT].int64_list.value[0] == image.shape[0]
        assert feature[schemas.WIDTH].int64_list.value[0] == image.shape[1]
        assert feature[schemas.CLASS_SYNSET].bytes_list.value[0] == f"n{label:08d}".encode()
    # Image i went to shard i % 3, in order.
    filenames = [
        tf.train.Example.FromString(r).features.feature[schemas.FILENAME].bytes_list.value[0]
        for r in records
    ]
    order = [i for s in range(3) for i in range(s, 12, 3)]
    assert filenames == [f"bench_{i:06d}.JPEG".encode() for i in order]


@pytest.mark.parametrize("kind", ["photos", "noise"])
def test_same_seed_gives_byte_identical_shards(tmp_path, photo_dir, kind):
    args = dict(kind=kind, photo_dir=photo_dir, num_shards=3, long_side=120)
    write_benchmark_shards(str(tmp_path / "a"), 12, seed=5, **args)
    write_benchmark_shards(str(tmp_path / "b"), 12, seed=5, **args)
    write_benchmark_shards(str(tmp_path / "c"), 12, seed=6, **args)
    for name in SHARDS:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a != (tmp_path / "c" / name).read_bytes()


def test_bad_photo_dir_and_kind_are_usage_errors(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    with pytest.raises(UsageError, match="no_such_dir"):
        write_benchmark_shards(str(tmp_path / "out"), 4, photo_dir=missing, num_shards=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=str(empty)):
        write_benchmark_shards(str(tmp_path / "out"), 4, photo_dir=str(empty), num_shards=2)
    with pytest.raises(UsageError, match="'jpegs'.*photos.*noise"):
        write_benchmark_shards(str(tmp_path / "out"), 4, kind="jpegs", num_shards=2)
    assert not (tmp_path / "out").exists()
