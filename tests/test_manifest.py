"""Configs checked against what the builders wrote beside the shards (data/manifest.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from test_input_data import write_coco_shard

from transfer_tf.config import ConfigError, DataConfig, config_from_dict
from transfer_tf.data import manifest
from transfer_tf.data.builders import build_folder
from transfer_tf.data.files import list_files
from transfer_tf.data.input import build_dataset

SIZE = 16


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Folder-builder shards (2 classes, manifest.json beside them) and a manifest-less copy."""
    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        os.makedirs(root / name)
        for i in range(3):
            pixels = rng.integers(0, 255, [24, 20, 3], dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    out = str(tmp_path_factory.mktemp("shards"))
    build_folder(str(root), out, train_shards=2, validation_shards=1)
    bare = str(tmp_path_factory.mktemp("public_tool_shards"))
    for path in list_files(f"{out}/train-*"):
        shutil.copy(path, bare)
    cfg = DataConfig(
        train_pattern=f"{out}/train-*", num_classes=2, image_size=SIZE, shuffle_buffer=2
    )
    return out, bare, cfg


def _train(cfg):
    return build_dataset(cfg, split="train", global_batch_size=2)


def test_mismatches_with_the_manifest_are_one_line_errors_naming_both_values(built):
    out, _, cfg = built
    path = os.path.join(out, "manifest.json")
    cases = {
        "num_classes": (dict(num_classes=1000), "'data.num_classes' is 1000", "is 2"),
        "label_offset": (dict(label_offset=0), "'data.label_offset' is 0", "is 1"),
        "schema": (dict(schema="coco"), "'data.schema' is 'coco'", "'classification'"),
    }
    for key, (change, mine, theirs) in cases.items():
        with pytest.raises(ConfigError) as info:
            _train(dataclasses.replace(cfg, **change))
        message = str(info.value)
        assert mine in message and theirs in message and path in message, (key, message)
        assert "\n" not in message
    names = os.path.join(out, "my_names.txt")
    with open(names, "w") as f:
        f.write("cat\nwolf\n")
    with pytest.raises(ConfigError, match=r"names class 1 'wolf' but .*manifest.json says 'dog'"):
        _train(dataclasses.replace(cfg, label_names_file=names))
    # A matching config builds; the label names file the builder wrote matches too.
    ok = dataclasses.replace(cfg, label_names_file=os.path.join(out, "label_names.txt"))
    _, labels = next(iter(_train(ok)))
    assert labels.shape == (2, 2)


def test_num_classes_auto_is_filled_from_the_manifest(built):
    out, bare, cfg = built
    parsed = config_from_dict({"data": {"num_classes": "auto"}})
    assert parsed.data.num_classes == 0  # auto, until the data says
    auto = dataclasses.replace(cfg, num_classes=parsed.data.num_classes)
    assert manifest.check_data_config(auto).num_classes == 2
    _, labels = next(iter(_train(auto)))
    assert labels.shape == (2, 2)
    # Record counts come from the manifest (no pass over the shards).
    files = list_files(f"{out}/train-*")
    assert sum(manifest.record_counts(files)) == 6
    # Shards from the public tools (no manifest): nothing to check, a number is trusted...
    public = dataclasses.replace(cfg, train_pattern=f"{bare}/train-*", num_classes=7)
    assert manifest.record_counts(list_files(public.train_pattern)) is None
    images, _ = next(iter(_train(public)))
    assert images.shape == (2, SIZE, SIZE, 3)
    # ...and `auto` has nothing to come from.
    with pytest.raises(ConfigError, match="'data.num_classes' is auto but no builder manifest"):
        manifest.check_data_config(dataclasses.replace(public, num_classes=0))


def test_coco_head_width_comes_from_the_label_map(tmp_path):
    _, label_map = write_coco_shard(str(tmp_path), [{"size": (40, 40), "boxes": [], "ids": []}])
    cfg = DataConfig(
        eval_pattern=f"{tmp_path}/coco-*",
        schema="coco",
        label_map_file=label_map,
        num_classes=1000,
        image_size=SIZE,
    )
    with pytest.raises(ConfigError, match=f"'data.num_classes' is 1000 but {label_map} says"):
        build_dataset(cfg, split="eval", global_batch_size=1)
    assert manifest.check_data_config(dataclasses.replace(cfg, num_classes=0)).num_classes == 4


def test_tfds_num_classes_comes_from_the_class_label():
    cfg = DataConfig(train_pattern="tfds:imagenet2012", num_classes=10, image_size=SIZE)
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(ConfigError, match="'data.num_classes' is 10 but tfds:imagenet2012"):
            build_dataset(cfg, split="train", global_batch_size=2)
        auto = manifest.check_data_config(dataclasses.replace(cfg, num_classes=0))
        assert auto.num_classes == 1000


def test_coco_manifest_fills_the_head_width_and_the_label_map(tmp_path):
    import json

    from transfer_tf.data.builders import build_coco
    from transfer_tf.datagen.shapes import write_coco_like

    coco = write_coco_like(str(tmp_path / "raw"), num_images=3, category_ids=[1, 3, 7], seed=0)
    shards = tmp_path / "tfr"
    build_coco([coco.image_dir], coco.annotations_file, str(shards / "train"), num_shards=1)
    cfg = DataConfig(train_pattern=f"{shards}/train-*", schema="coco", num_classes=0)
    checked = manifest.check_data_config(cfg)
    assert checked.num_classes == 3
    assert checked.label_map_file == f"{shards}/label_map.json"
    other = tmp_path / "other_map.json"
    other.write_text(json.dumps({"1": 0, "2": 1, "3": 2}))
    with pytest.raises(ConfigError, match=r"label_map_file.*differently from .*manifest-train"):
        manifest.check_data_config(dataclasses.replace(cfg, label_map_file=str(other)))
