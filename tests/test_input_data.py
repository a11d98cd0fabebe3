"""Shard writers shared by the input-pipeline tests (real TFRecord files in the public formats)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from transfer_tf.data import schemas


def encode(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def write_classification_shards(
    directory: str,
    num_shards: int,
    per_shard: int,
    num_classes: int = 5,
    label_offset: int = 1,
    seed: int = 0,
    minimal: bool = False,
    fmt: str = "JPEG",
    prefix: str = "train",
    unique_labels: bool = False,
) -> list[tuple[str, int, int]]:
    """Writes shards; returns (shard path, record index, stored label) per record."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    written = []
    for s in range(num_shards):
        path = os.path.join(directory, f"{prefix}-{s:05d}-of-{num_shards:05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for r in range(per_shard):
                height, width = int(rng.integers(40, 72)), int(rng.integers(40, 72))
                data = encode(random_image(rng, height, width), fmt)
                label = int(rng.integers(0, num_classes)) + label_offset
                if unique_labels:  # label = record number: lets tests track record identity
                    label = len(written) + label_offset
                if minimal:
                    ex = tf.train.Example(
                        features=tf.train.Features(
                            feature={
                                schemas.ENCODED: schemas._bytes([data]),
                                schemas.CLASS_LABEL: schemas._ints([label]),
                            }
                        )
                    )
                else:
                    ex = schemas.classification_example(
                        data, label, f"n{label:08d}", height, width, f"img_{s}_{r}.JPEG"
                    )
                writer.write(ex.SerializeToString())
                written.append((path, r, label))
    return written


COCO_IDS = (1, 3, 7, 90)


def write_coco_shard(directory: str, examples: list[dict], name: str = "coco-00000-of-00001"):
    """examples: {"size": (h, w), "boxes": [[ymin, xmin, ymax, xmax]], "ids": [...]}."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(1)
    path = os.path.join(directory, name)
    with tf.io.TFRecordWriter(path) as writer:
        for i, e in enumerate(examples):
            h, w = e["size"]
            ex = schemas.coco_example(
                encode(random_image(rng, h, w)),
                h,
                w,
                f"{i}.jpg",
                str(i),
                "0" * 64,
                e["boxes"],
                e["ids"],
                ["x"] * len(e["ids"]),
                [0] * len(e["ids"]),
                [1.0] * len(e["ids"]),
            )
            writer.write(ex.SerializeToString())
    label_map = os.path.join(directory, "label_map.json")
    with open(label_map, "w") as f:
        json.dump({str(c): i for i, c in enumerate(COCO_IDS)}, f)
    return path, label_map
