"""Segmentation inputs (transfer_tf/data/segmentation.py): class maps from instance masks (ignore
on disagreeing overlaps and crowds, the VOC subset), Model Garden's semantic PNG layout, the eval
class map at the original size, and a train crop/flip/resize applied to image and map alike."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer_tf.config import ConfigError, DataConfig, config_from_dict
from transfer_tf.data import schemas
from transfer_tf.data.builders import build_coco
from transfer_tf.data.input import build_dataset
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.data.segmentation import (
    SEMANTIC_ENCODED,
    SegmentationParser,
    class_map,
)
from transfer_tf.datagen.shapes import write_coco_like
from transfer_tf.segmentation.settings import SegmentationConfig, aspp_rates


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_class_map_marks_disagreeing_overlaps_and_crowds_ignored():
    m = np.zeros((6, 4, 6), bool)  # instances, rows, columns
    m[0, :, 0:3] = True  # class 1
    m[1, :, 2:4] = True  # class 2, overlaps class 1 in column 2
    m[2, :2, 4] = True  # class 1 again, overlapping instance 3 (same class) below
    m[3, :, 4] = True  # class 1
    m[4, :, 5] = True  # crowd of class 2
    m[5, :2, 5] = True  # class 0 (not in the map, e.g. a non-VOC category): background
    masks = tf.constant(m)
    out = class_map(masks, tf.constant([1, 2, 1, 1, 2, 0]), tf.constant([0, 0, 0, 0, 1, 0]))
    expected = np.array([[1, 1, 255, 2, 1, 255]] * 4, np.uint8)
    np.testing.assert_array_equal(out.numpy(), expected)
    empty = class_map(tf.zeros([0, 3, 2], tf.bool), tf.zeros([0], tf.int64), tf.zeros([0]))
    np.testing.assert_array_equal(empty.numpy(), np.zeros((3, 2)))


def test_aspp_rates_scale_with_the_feature_map():
    assert aspp_rates(SegmentationConfig(image_size=512)) == [3, 6, 9]
    assert aspp_rates(SegmentationConfig(image_size=128)) == [1, 2, 3]


@pytest.fixture(scope="module")
def coco_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_data")
    coco = write_coco_like(
        str(root / "raw"), num_images=4, category_ids=[1, 3, 7], image_size_range=(40, 60)
    )
    prefix = str(root / "tfr" / "train")
    build_coco([coco.image_dir], coco.annotations_file, prefix, num_shards=1, include_masks=True)
    files = tf.io.gfile.glob(prefix + "-*")
    return files, str(root / "tfr" / "label_map.json")


def _records(files):
    return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def test_eval_class_map_is_the_instances_at_original_size(coco_shards):
    files, label_map_file = coco_shards
    seg = SegmentationConfig(image_size=64, max_eval_size=64)
    data = DataConfig(schema="coco", num_classes=3)
    parser = SegmentationParser(data, seg, training=False, label_map=read_label_map(label_map_file))
    for record in _records(files):
        example = tf.train.Example.FromString(record)
        f = example.features.feature
        image = np.array(Image.open(io.BytesIO(f[schemas.ENCODED].bytes_list.value[0])))
        inputs, labels = parser(parser.decoder.decode(record), tf.constant([0, 0], tf.int64))
        h, w = image.shape[:2]
        assert inputs["image_hw"].numpy().tolist() == [h, w]
        assert inputs["images"].shape == (64, 64, 3)
        labels = labels.numpy()
        assert (labels[h:] == 255).all() and (labels[:, w:] == 255).all()
        # Generated objects barely overlap: each instance's pixels carry its class (index + 1).
        index = read_label_map(label_map_file).id_to_index
        for png, cid in zip(
            f[schemas.OBJECT_MASK].bytes_list.value,
            f[schemas.OBJECT_LABEL].int64_list.value,
            strict=True,
        ):
            inside = np.array(Image.open(io.BytesIO(png))) > 0
            values = labels[:h, :w][inside]
            assert np.mean(values == index[cid] + 1) > 0.9
        assert (labels[:h, :w] == 0).mean() > 0.2  # background exists


def test_voc21_keeps_only_voc_categories(coco_shards):
    files, _ = coco_shards
    # COCO ids 1 (person), 3 (car) are VOC classes 15 and 7; 7 (train) is VOC 19.
    seg = SegmentationConfig(image_size=64, classes="voc21", max_eval_size=64)
    parser = SegmentationParser(DataConfig(schema="coco"), seg, training=False, label_map=None)
    seen = set()
    for record in _records(files):
        _, labels = parser(parser.decoder.decode(record), tf.constant([0, 0], tf.int64))
        seen |= set(np.unique(labels.numpy()).tolist())
    assert seen <= {0, 7, 15, 19, 255} and seen & {7, 15, 19}


def test_semantic_layout_and_train_flip_crop_move_image_and_map_together():
    # A left/right split image whose class map says which half: any crop, scale and flip must
    # keep the map on the image's colours.
    h, w = 30, 50
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :25] = (250, 0, 0)
    image[:, 25:] = (0, 0, 250)
    labels = np.zeros((h, w), np.uint8)
    labels[:, 25:] = 1
    labels[0] = 255
    feature = {
        schemas.ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(image)])),
        SEMANTIC_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(labels)])),
    }
    record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    data = DataConfig(num_classes=2, random_flip=True)
    seg = SegmentationConfig(image_size=32, layout="semantic", scale_jitter=(0.8, 1.6))
    eval_parser = SegmentationParser(data, seg, training=False, label_map=None)
    _, eval_labels = eval_parser(eval_parser.decoder.decode(record), tf.constant([0, 0]))
    np.testing.assert_array_equal(eval_labels.numpy()[:h, :w], labels)
    parser = SegmentationParser(data, seg, training=True, label_map=None)
    flips = set()
    for i in range(8):
        out_image, out_labels = parser(parser.decoder.decode(record), tf.constant([i, 3]))
        out_image, out_labels = out_image.numpy().astype(int), out_labels.numpy()
        assert out_labels.shape == (32, 32) and out_labels.dtype == np.uint8
        red = out_image[..., 0] > 200
        blue = out_image[..., 2] > 200
        # Row 0 of the map is ignore (255); otherwise red pixels are class 0, blue class 1.
        assert np.isin(out_labels[red], [0, 255]).mean() > 0.97
        assert np.isin(out_labels[blue], [1, 255]).mean() > 0.97
        assert (out_labels[red | blue] == 255).mean() < 0.25
        padding = out_image.sum(-1) == 0
        assert (out_labels[padding] == 255).all()
        flips.add(bool(red[:, 0].any()))
    assert len(flips) == 2  # both orientations were drawn


def test_shards_without_masks_fail_naming_the_builder_flag():
    image = np.zeros((8, 8, 3), np.uint8)
    feature = {
        schemas.ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(image)])),
        schemas.OBJECT_LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
    }
    record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    seg = SegmentationConfig(image_size=32, classes="voc21")
    parser = SegmentationParser(DataConfig(schema="coco"), seg, training=True, label_map=None)
    with pytest.raises(tf.errors.InvalidArgumentError, match="--include_masks"):
        parser(parser.decoder.decode(record), tf.constant([0, 0]))


@pytest.mark.parametrize("on_corrupt_record", ["error", "skip"])
def test_segmentation_dataset_batches(coco_shards, on_corrupt_record):
    files, label_map_file = coco_shards
    cfg = config_from_dict(
        {
            "data": {
                "on_corrupt_record": on_corrupt_record,
                "schema": "coco",
                "train_pattern": files[0],
                "eval_pattern": files[0],
                "label_map_file": label_map_file,
                "num_classes": 3,
            },
            "transfer": {"task": "segmentation"},
            "segmentation": {"image_size": 32, "max_eval_size": 64},
        }
    )
    common = dict(global_batch_size=2, deterministic=True)
    images, labels = next(
        iter(build_dataset(cfg.data, split="train", detection=cfg.segmentation, **common))
    )
    assert images.shape == (2, 32, 32, 3) and labels.shape == (2, 32, 32)
    inputs, labels = next(
        iter(build_dataset(cfg.data, split="eval", detection=cfg.segmentation, **common))
    )
    assert inputs["images"].shape == (2, 32, 32, 3) and labels.shape == (2, 64, 64)
    assert os.path.exists(label_map_file)


def test_config_checks_name_the_key():
    def base():
        return {"data": {"schema": "coco", "num_classes": 3}, "transfer": {"task": "segmentation"}}

    with pytest.raises(ConfigError, match="'segmentation.image_size'"):
        config_from_dict(base(), ["segmentation.image_size=100"])
    with pytest.raises(ConfigError, match="'data.image_size'.*'segmentation.image_size'"):
        config_from_dict(base(), ["data.image_size=64"])
    with pytest.raises(ConfigError, match="'segmentation.head'.*'transfer.task'"):
        config_from_dict({}, ["segmentation.head=deeplabv3plus"])
    with pytest.raises(ConfigError, match="'segmentation.layout'.*'data.schema'"):
        config_from_dict(base(), ["data.schema=classification"])
