"""Classification shards (tensorflow/tpu `imagenet_to_gcs.py` schema) from labelled image files.

Shared by the ImageNet and image-folder builders: they only differ in how they find files and
labels. Each plan item is `[relative path, class index]`; the stored label is
`class index + label_offset` (1-based by default, as the public ImageNet shards are).

Output directory:
  train-00000-of-01024 ...   validation-00000-of-00128 ...   (TFRecord shards)
  labels.txt                 one class key (wnid / folder name) per line, class-index order
  label_names.txt            one human-readable name per line, class-index order
                             (the names from --synset_names_file, else the keys)
  manifest.json              counts, skipped files, label map (see manifests)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transfer_tf.atomic_io import write_text_atomic
from transfer_tf.data import schemas
from transfer_tf.data.builders.image_codec import BadImage, prepare_image
from transfer_tf.data.builders.manifests import write_manifests
from transfer_tf.data.builders.sharded_writer import (
    Encoded,
    Encoder,
    ShardSpec,
    WriteOptions,
    contiguous_chunks,
    shard_name,
    write_shards,
)
from transfer_tf.data.builders.write_errors import writing
from transfer_tf.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass(frozen=True)
class ClassificationEncoder(Encoder):
    """Reads `root/<relative path>`, makes it an RGB JPEG, builds the Example."""

    root: str
    class_keys: tuple[str, ...]
    class_names: tuple[str, ...] | None
    label_offset: int
    # Turn pixels upright as their EXIF orientation says (folder builder); see image_codec.
    exif_orientation: bool = False

    def options(self) -> dict[str, Any]:
        options = {
            "class_keys": list(self.class_keys),
            "class_names": list(self.class_names) if self.class_names else None,
            "label_offset": self.label_offset,
        }
        if self.exif_orientation:  # absent when off: ImageNet builds keep their fingerprints
            options["exif_orientation"] = True
        return options

    def encode(self, item: Any) -> Encoded:
        rel, index = item
        name = os.path.basename(rel)
        try:
            with open(os.path.join(self.root, rel), "rb") as f:
                data = f.read()
            image = prepare_image(data, self.exif_orientation)
        except FileNotFoundError:
            return Encoded(None, rel, skip_reason="file is missing")
        except OSError as e:
            return Encoded(None, rel, skip_reason=f"cannot read file: {e.strerror or e}")
        except BadImage as e:
            return Encoded(None, rel, skip_reason=str(e))
        example = schemas.classification_example(
            image.jpeg,
            label=index + self.label_offset,
            synset=self.class_keys[index],
            height=image.height,
            width=image.width,
            filename=name,
            class_text=self.class_names[index] if self.class_names else None,
        )
        return Encoded(
            example.SerializeToString(deterministic=True),
            rel,
            fixed=image.fixed,
            classes=(self.class_keys[index],),
        )


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_class_dir(path: str) -> list[str]:
    """Sorted image file names directly inside `path` (hidden files and other types ignored)."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_file(e.name))


def list_subdirs(path: str) -> list[str]:
    """Sorted names of the non-hidden subdirectories of `path`."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def make_specs(
    output_dir: str, split: str, items: Sequence[Any], num_shards: int
) -> list[ShardSpec]:
    """Consecutive chunks of `items` as `split-%05d-of-%05d` shards (imagenet_to_gcs naming)."""
    return [
        ShardSpec(
            split, i, num_shards, os.path.join(output_dir, shard_name(split, i, num_shards)), chunk
        )
        for i, chunk in enumerate(contiguous_chunks(items, num_shards))
    ]


def check_num_shards(flag: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"--{flag} must be >= 1, got {value}")


def write_classification(
    output_dir: str,
    root: str,
    specs: list[ShardSpec],
    class_keys: Sequence[str],
    class_names: Sequence[str] | None,
    label_offset: int,
    options: WriteOptions,
    builder: str,
    extra_header: dict[str, Any] | None = None,
    exif_orientation: bool = False,
    input_files: Sequence[str] = (),
) -> str | None:
    """Writes label files, this task's shards and the manifest; returns the manifest path
    (None while other tasks' shards are unfinished). `exif_orientation`: turn photos upright
    (see `image_codec.prepare_image`). `input_files`: what the build reads besides `root` (all
    paths local lets the workers fork from this process: `worker_start.start_method`)."""
    import tensorflow as tf

    names = list(class_names) if class_names else list(class_keys)
    # Every task writes the same label files; the content depends only on the inputs.
    for name, lines in (("labels.txt", class_keys), ("label_names.txt", names)):
        path = os.path.join(output_dir, name)
        with writing(path):
            tf.io.gfile.makedirs(output_dir)
            write_text_atomic(path, "".join(line + "\n" for line in lines))
    encoder = ClassificationEncoder(
        root,
        tuple(class_keys),
        tuple(class_names) if class_names else None,
        label_offset,
        exif_orientation,
    )
    paths = [root, output_dir, *(p for p in input_files if p)]
    results = write_shards(specs, encoder, options, label=builder, input_paths=paths)
    header = {
        "builder": builder,
        "schema": "classification",
        "schema_version": schemas.SCHEMA_VERSION,
        "label_offset": label_offset,
        "num_classes": len(class_keys),
        **(extra_header or {}),
        "label_map": [
            {"index": i, "label": i + label_offset, "key": k, "name": names[i]}
            for i, k in enumerate(class_keys)
        ],
    }
    return write_manifests(
        os.path.join(output_dir, "manifest.json"), specs, encoder, options, results, header
    )
