"""Users' own labelled images -> classification shards: `root/<class>/*.{jpg,jpeg,png,bmp,gif}`.

Classes are the sorted non-hidden subfolders of `root` (class index = position). With
`validation_fraction > 0`, that fraction of each class (rounded, chosen with `seed`) goes to
`validation-*` shards, the rest to `train-*` (shuffled with `seed`). Files with other extensions
are ignored and listed in the manifest's `ignored` entry.

Photos are stored upright: a JPEG whose EXIF orientation tag says "rotate" (phone cameras store
portrait shots sideways with such a tag; TensorFlow's decoders ignore it) is turned and
re-encoded, and listed under `converted` in the manifest. (The ImageNet and COCO builders keep
the stored pixels, which their annotations refer to.)

Unlabeled mode (`unlabeled=True`, self-supervised pretraining): the images directly inside `root`
(subfolders ignored), all in one class `unlabeled` (class index 0), so the shards keep the
classification schema every reader expects; the manifest says `"unlabeled": true`. Train on them
with `ssl.method: simclr | byol` (labels ignored); a supervised run on them learns nothing.

Example:
    build_folder("photos/", "photos-tfrecords/", train_shards=8, validation_fraction=0.1)
    build_folder("unlabeled_photos/", "ssl-tfrecords/", unlabeled=True)
"""

from __future__ import annotations

import os
import random

from transfer_tf.data.builders.classification import (
    check_num_shards,
    is_image_file,
    list_subdirs,
    make_specs,
    write_classification,
)
from transfer_tf.data.builders.sharded_writer import ShardSpec, WriteOptions
from transfer_tf.data.builders.write_errors import check_writable
from transfer_tf.errors import UsageError

# The one class of an unlabeled folder's shards.
UNLABELED_CLASS = "unlabeled"


def plan_folder(
    root: str,
    output_dir: str,
    *,
    train_shards: int = 16,
    validation_shards: int = 4,
    validation_fraction: float = 0.0,
    seed: int = 0,
    unlabeled: bool = False,
) -> tuple[list[ShardSpec], list[str], list[str]]:
    """Returns (shard specs, sorted class names, ignored non-image files)."""
    if not os.path.isdir(root):
        raise UsageError(f"--root {root} is not a directory")
    check_num_shards("train_shards", train_shards)
    if not 0.0 <= validation_fraction < 1.0:
        raise UsageError(f"--validation_fraction must be in [0, 1), got {validation_fraction}")
    # Unlabeled: one pseudo-class whose folder is `root` itself (relative paths are file names).
    classes = [UNLABELED_CLASS] if unlabeled else list_subdirs(root)
    if not classes:
        raise UsageError(f"--root {root}: expected one subfolder per class, found none")
    rng = random.Random(seed)
    train, val, ignored = [], [], []
    for index, name in enumerate(classes):
        folder = "" if unlabeled else name
        with os.scandir(os.path.join(root, folder)) as it:
            entries = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
        files = [os.path.join(folder, e) for e in entries if is_image_file(e)]
        ignored += [os.path.join(folder, e) for e in entries if not is_image_file(e)]
        if unlabeled and not files:
            raise UsageError(f"--root {root}: --unlabeled found no images directly inside it")
        rng.shuffle(files)
        n_val = round(validation_fraction * len(files))
        val += [[f, index] for f in sorted(files[:n_val])]
        train += [[f, index] for f in files[n_val:]]
    rng.shuffle(train)
    specs = make_specs(output_dir, "train", train, train_shards)
    if validation_fraction > 0:
        check_num_shards("validation_shards", validation_shards)
        specs += make_specs(output_dir, "validation", val, validation_shards)
    return specs, classes, ignored


def build_folder(
    root: str,
    output_dir: str,
    *,
    train_shards: int = 16,
    validation_shards: int = 4,
    validation_fraction: float = 0.0,
    label_offset: int = 1,
    seed: int = 0,
    options: WriteOptions | None = None,
    unlabeled: bool = False,
) -> str | None:
    """Builds the shards, `labels.txt`, `label_names.txt` and `manifest.json` in `output_dir`;
    returns the manifest path (None while other tasks' shards are unfinished). `unlabeled`: the
    images directly in `root`, one class (see module doc)."""
    options = options or WriteOptions()
    options.validate()
    check_writable(output_dir, "--output_dir")  # before the input is listed and read
    specs, classes, ignored = plan_folder(
        root,
        output_dir,
        train_shards=train_shards,
        validation_shards=validation_shards,
        validation_fraction=validation_fraction,
        seed=seed,
        unlabeled=unlabeled,
    )
    header = {"seed": seed, "validation_fraction": validation_fraction, "ignored": ignored}
    if unlabeled:  # absent otherwise: labelled builds keep their manifests byte for byte
        header["unlabeled"] = True
    return write_classification(
        output_dir,
        root,
        specs,
        classes,
        None,
        label_offset,
        options,
        builder="folder",
        extra_header=header,
        exif_orientation=True,
    )
