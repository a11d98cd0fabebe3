"""TensorFlow Datasets as an alternative source: `data.train_pattern: tfds:imagenet2012`.

TFDS examples are mapped to the decoders' tensor layout (encoded image bytes, labels, boxes) and
go through the same parsers as TFRecord shards. Images are read undecoded
(`tfds.decode.SkipDecoding`) so training still uses the fused JPEG decode-and-crop.

Supported: single-label datasets with `image` + `label` features (`imagenet2012`, `imagenette`,
...) and detection datasets with `objects/{bbox,label}` (`coco/2017`). TFDS labels are already
0-based class indices, so `label_offset` and `label_map_file` do not apply.
`tfds_data_dir` is where prepared data lives; `tfds_manual_dir` holds manually downloaded archives
(ImageNet) used when the dataset is prepared the first time. Nothing is downloaded.

Example:
    cfg.data.train_pattern = "tfds:imagenet2012"
    ds = build_dataset(cfg.data, split="train", global_batch_size=256)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from transfer_tf.config import DataConfig
from transfer_tf.errors import UsageError

_SPLITS = {"train": "train", "eval": "validation"}


def dataset_name(pattern: str) -> str:
    """`tfds:coco/2017` -> `coco/2017` (optionally `tfds:NAME:SPLIT` picks the split)."""
    name = pattern[len("tfds:") :].split(":")[0].strip()
    if not name:
        raise UsageError(f"data pattern '{pattern}': expected tfds:NAME, e.g. tfds:imagenet2012")
    return name


def _split(pattern: str, training: bool) -> str:
    parts = pattern[len("tfds:") :].split(":")
    return parts[1] if len(parts) > 1 and parts[1] else _SPLITS["train" if training else "eval"]


def _to_decoded(example: dict, schema: str) -> dict[str, tf.Tensor]:
    if schema == "coco":
        objects = example["objects"]
        classes = tf.cast(objects["label"], tf.int64)
        is_crowd = tf.cast(objects.get("is_crowd", tf.zeros_like(classes, tf.bool)), tf.int64)
        return {
            "image": example["image"],
            "boxes": tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4]),
            "classes": classes,
            "is_crowd": is_crowd,
        }
    return {"image": example["image"], "label": tf.cast(example["label"], tf.int64)}


def _builder(data_cfg: DataConfig, pattern: str):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(dataset_name(pattern), data_dir=data_cfg.tfds_data_dir or None)
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, ValueError) as e:
        raise UsageError(f"data pattern '{pattern}': {str(e).splitlines()[0]}") from None


def num_classes(data_cfg: DataConfig, pattern: str) -> int | None:
    """The ClassLabel count of the dataset's `label` (or `objects/label`) feature, if it has one."""
    features = _builder(data_cfg, pattern).info.features
    if "objects" in features:
        label = features["objects"]["label"]
    else:
        label = features["label"] if "label" in features else None
    count = getattr(label, "num_classes", None)
    return int(count) if count else None


@dataclasses.dataclass(frozen=True)
class Source:
    """A TFDS split as epochs: `records(epoch)` gives this pipeline's `(shard, index, epoch,
    decoded tensors)` of one epoch; `epoch_size()` counts them (a pass when TFDS cannot say)."""

    records: Callable[[tf.Tensor], tf.data.Dataset]
    epoch_size: Callable[[], int]
    schema: str


def load(
    data_cfg: DataConfig,
    pattern: str,
    *,
    training: bool,
    seed: int,
    input_context: tf.distribute.InputContext | None = None,
) -> Source:
    """The split of `pattern` for this input pipeline (schema `classification|coco`).

    `shard` is the TFDS example id (file and position), used in error messages.
    Raises:
      UsageError: unknown dataset, missing data, or a dataset without image/label features.
    """
    import tensorflow_datasets as tfds

    name = dataset_name(pattern)
    split = _split(pattern, training)
    read_config = tfds.ReadConfig(
        input_context=input_context,
        shuffle_seed=seed,
        add_tfds_id=True,
        interleave_cycle_length=data_cfg.cycle_length,
    )
    builder = _builder(data_cfg, pattern)
    try:
        features = builder.info.features
        if data_cfg.tfds_manual_dir:
            # A no-op when the data is already prepared; otherwise prepares from the archives.
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=data_cfg.tfds_manual_dir)
            )
        ds = builder.as_dataset(
            split=split,
            shuffle_files=training,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, ValueError) as e:
        raise UsageError(f"data pattern '{pattern}': {str(e).splitlines()[0]}") from None
    if "objects" in features and "image" in features:
        schema = "coco"
    elif "image" in features and "label" in features:
        schema = "classification"
    else:
        raise UsageError(f"data pattern '{pattern}': needs image+label or image+objects features")

    def records(epoch):
        def one(example):
            shard = example.get("tfds_id", tf.constant(f"tfds:{name}/{split}"))
            return shard, tf.constant(0, tf.int64), epoch, _to_decoded(example, schema)

        return ds.map(one)

    def epoch_size() -> int:
        known = int(ds.cardinality())
        if known >= 0:
            return known
        return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))

    return Source(records, epoch_size, schema)
