"""Issue 17, config and data: the `ssl` section (errors name the key, conflicts are one line) and
the input pipeline's two-view mode on classification shards, COCO shards and an unlabeled image
folder (labels ignored)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer_tf.config import ConfigError, load_config
from transfer_tf.data.builders import build_folder
from transfer_tf.data.input import build_dataset
from transfer_tf.data.schemas import classification_example, coco_example
from transfer_tf.ssl import views as views_lib


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ssl.metod=simclr"], r"unknown config key 'ssl.metod'; did you mean 'method'"),
        (["ssl.method=moco"], r"config key 'ssl.method': 'moco' is not one of"),
        (["ssl.views=strong"], r"config key 'ssl.views': 'strong' is not one of"),
        (["ssl.temperature=0"], r"config key 'ssl.temperature': expected > 0"),
        (["ssl.blur_sigma=[2.0, 1.0]"], r"config key 'ssl.blur_sigma'"),
        (["ssl.knn_k=-1"], r"config key 'ssl.knn_k'"),
        (["ssl.momentum_base=1.5"], r"config key 'ssl.momentum_base'"),
        (
            ["ssl.method=simclr", "data.mixup_alpha=0.2"],
            r"config keys 'ssl.method' \('simclr'\) and 'data.mixup_alpha' \(0.2\) conflict",
        ),
        (
            ["ssl.method=byol", "data.cutmix_alpha=1.0"],
            r"'ssl.method' \('byol'\) and 'data.cutmix_alpha'",
        ),
        (
            ["ssl.method=simclr", "data.augment_policy=randaugment"],
            r"'ssl.method' \('simclr'\) and 'data.augment_policy' \('randaugment'\) conflict",
        ),
        (["ssl.method=byol", "data.color_jitter=[0.4, 0.4, 0.4, 0.1]"], r"'data.color_jitter'"),
        (["ssl.method=byol", "train.ema_decay=0.99"], r"'ssl.method'.*'train.ema_decay'"),
        (
            ["ssl.method=byol", "ssl.projection_widths=[64, 32]", "ssl.predictor_widths=[64, 16]"],
            r"'ssl.projection_widths' \(\[64, 32\]\) and 'ssl.predictor_widths'",
        ),
    ],
)
def test_ssl_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method, peak_lr, decay", [("simclr", 4.8, 1e-6), ("byol", 3.2, 1.5e-6)])
def test_shipped_recipes_load(method, peak_lr, decay):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(root, "configs", f"imagenet_{method}_resnet50.yaml"))
    train = cfg.train
    assert cfg.ssl.method == method and train.optimizer == "lars" and train.weight_decay == decay
    assert train.base_learning_rate * train.global_batch_size / 256 == pytest.approx(peak_lr)
    assert train.epochs == 1000 and cfg.model.sync_batchnorm


def test_supervised_default_allows_the_supervised_options():
    cfg = load_config(None, ["data.mixup_alpha=0.2", "data.augment_policy=randaugment"])
    assert cfg.ssl.method == "supervised"


def test_view_config_follows_method_strength_and_image_size():
    simclr = views_lib.config_views(load_config(None, ["ssl.method=simclr", "data.image_size=32"]))
    assert simclr.image_size == 32 and simclr.blur_prob == (0.5, 0.5)
    # sigma 0.1-2.0 px of a 224 view, scaled to the 32 px view (the same share of the image).
    assert simclr.blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
    byol = views_lib.config_views(
        load_config(
            None,
            ["ssl.method=byol", "ssl.color_strength=0.5", "ssl.blur_reference_size=0"],
        )
    )
    assert byol.jitter == pytest.approx((0.2, 0.2, 0.1, 0.05)) and byol.solarize_prob == (0, 0.2)
    assert byol.blur_sigma == (0.1, 2.0)  # reference size 0: pixels of the view itself
    forced = views_lib.config_views(load_config(None, ["ssl.method=byol", "ssl.views=simclr"]))
    assert forced.blur_prob == (0.5, 0.5)
    # The jitter ops are the recipe's own (the papers' tf.image ops), or torchvision's on request.
    assert (simclr.jitter_ops, byol.jitter_ops, forced.jitter_ops) == ("simclr", "byol", "simclr")
    plain = load_config(None, ["ssl.method=byol", "ssl.jitter_ops=torchvision"])
    assert views_lib.config_views(plain).jitter_ops == "torchvision"


def _jpeg(rng, label: int = 0) -> bytes:
    img = rng.integers(0, 80, [40, 48, 3]).astype("uint8")
    img[..., label % 3] += np.uint8(100)
    return tf.io.encode_jpeg(img, quality=95).numpy()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Classification shards (one record without a label), COCO shards, and an unlabeled folder
    built with `build_folder(unlabeled=True)`."""
    d = tmp_path_factory.mktemp("ssl_data")
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(d / "cls-00000-of-00001")) as w:
        for i in range(7):
            w.write(
                classification_example(
                    _jpeg(rng, i), i % 3 + 1, "c", 40, 48, "x"
                ).SerializeToString()
            )
        unlabeled = tf.train.Example()
        unlabeled.features.feature["image/encoded"].bytes_list.value.append(_jpeg(rng))
        w.write(unlabeled.SerializeToString())
    with tf.io.TFRecordWriter(str(d / "coco-00000-of-00001.tfrecord")) as w:
        for i in range(8):
            example = coco_example(
                _jpeg(rng, i), 40, 48, f"{i}.jpg", str(i), "0", [[0.1, 0.1, 0.5, 0.6]],
                [90], ["toothbrush"], [0], [100.0],
            )  # fmt: skip
            w.write(example.SerializeToString())
    folder = d / "flat"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, [36, 30, 3]).astype("uint8")).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()  # ignored in unlabeled mode
    manifest = build_folder(str(folder), str(d / "flat_tfrecords"), train_shards=2, unlabeled=True)
    return d, manifest


def _views_batch(pattern: str, schema: str, **data) -> tuple:
    cfg = load_config(
        None,
        [
            "ssl.method=simclr",
            f"data.train_pattern={pattern}",
            f"data.schema={schema}",
            "data.num_classes=3",
            "data.image_size=24",
            *[f"data.{k}={v}" for k, v in data.items()],
        ],
    )
    ds = build_dataset(
        cfg.data, split="train", global_batch_size=8, seed=1, deterministic=True,
        views=views_lib.views_fn(cfg),
    )  # fmt: skip
    return next(iter(ds))


def test_two_view_batches_on_classification_coco_and_an_unlabeled_folder(shards):
    d, manifest = shards
    with open(manifest) as f:
        text = f.read()
    assert '"unlabeled": true' in text and '"num_classes": 1' in text and "notes.txt" in text
    cases = {
        # One record has no label at all: two-view mode neither maps nor checks labels.
        "classification": _views_batch(str(d / "cls-*"), "classification"),
        # COCO: category 90 is in no label map; none is needed.
        "coco": _views_batch(str(d / "coco-*"), "coco"),
        "folder": _views_batch(str(d / "flat_tfrecords" / "train-*"), "classification",
                               num_classes="auto"),
    }  # fmt: skip
    for name, ((view1, view2), labels) in cases.items():
        assert view1.shape == view2.shape == (8, 24, 24, 3), name
        assert view1.dtype == tf.uint8 and labels.shape == (8, 0), name
        assert not np.array_equal(view1.numpy(), view2.numpy()), name


def test_supervised_training_on_unlabeled_shards_is_an_error(shards):
    from transfer_tf.training.run_setup import checked_config

    d, _ = shards
    pattern = f"data.train_pattern={d / 'flat_tfrecords' / 'train-*'}"
    with pytest.raises(ConfigError, match=r"have no labels .*ssl.method: simclr \| byol"):
        checked_config(load_config(None, [pattern, "data.num_classes=auto"]))
    ssl = checked_config(load_config(None, [pattern, "data.num_classes=auto", "ssl.method=byol"]))
    assert ssl.data.num_classes == 1


def test_unlabeled_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    from transfer_tf.errors import UsageError

    with pytest.raises(UsageError, match="--unlabeled found no images"):
        build_folder(str(tmp_path), str(tmp_path / "out"), unlabeled=True)
    assert not os.path.exists(tmp_path / "out")
