"""Tiny classification TFRecords for the tests that run the training binaries: 40x40 JPEGs whose
colour says the class, in the ImageNet schema (`image/class/label` 1..CLASSES)."""

import numpy as np
import tensorflow as tf

from transfer_tf.data.schemas import classification_example

CLASSES = 4


def write_shards(path_prefix: str, n: int, shards: int, seed: int) -> None:
    """Writes `n` examples into `path_prefix-0000K-of-0000M` (`shards` files)."""
    rng = np.random.default_rng(seed)
    per = n // shards
    for s in range(shards):
        with tf.io.TFRecordWriter(f"{path_prefix}-{s:05d}-of-{shards:05d}") as w:
            for i in range(per):
                label = (s * per + i) % CLASSES
                img = rng.integers(0, 60, [40, 40, 3]).astype("uint8")
                img[..., label % 3] += np.uint8(60 + 40 * label)
                jpeg = tf.io.encode_jpeg(img, quality=95).numpy()
                ex = classification_example(jpeg, label + 1, f"c{label}", 40, 40, f"{s}_{i}.jpg")
                w.write(ex.SerializeToString())
