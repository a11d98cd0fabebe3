"""ILSVRC2012 raw dump -> classification shards compatible with tensorflow/tpu `imagenet_to_gcs.py`.

Input layout (`raw_data_dir`):
  train/<wnid>/*.JPEG
  val/<wnid>/*.JPEG                       (validation in class folders), or
  val/*.JPEG + a labels file:             flat validation, labelled by either
      synset_labels.txt  one wnid per line, in sorted file-name order (imagenet_to_gcs.py), or
      LOC_val_solution.csv  Kaggle's `ImageId,PredictionString` (first token is the wnid).
  The labels file is `--validation_labels_file`, else `raw_data_dir/synset_labels.txt` or
  `raw_data_dir/LOC_val_solution.csv` when present.

Labels: the class index is the wnid's position in the sorted list of `train/` folders (of `val/`
folders or of the labels file when there is no `train/`); stored label = index + label_offset.
Training records are shuffled with `seed`; validation records are in file-name order.

Example:
    build_imagenet("/data/ILSVRC2012", "/data/imagenet-tfrecords", train_shards=1024,
                   validation_shards=128, options=WriteOptions(num_workers=8))
"""

from __future__ import annotations

import csv
import os
import random

from transfer_tf.data.builders.classification import (
    check_num_shards,
    list_class_dir,
    list_subdirs,
    make_specs,
    write_classification,
)
from transfer_tf.data.builders.sharded_writer import ShardSpec, WriteOptions
from transfer_tf.data.builders.write_errors import check_writable
from transfer_tf.errors import UsageError

DEFAULT_LABEL_FILES = ("synset_labels.txt", "LOC_val_solution.csv")


def read_synset_names(path: str) -> dict[str, str]:
    """Parses `wnid<TAB or spaces>name` lines (imagenet_metadata.txt, LOC_synset_mapping.txt)."""
    names = {}
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.strip().split(None, 1)
                if len(parts) != 2:
                    raise UsageError(
                        f"--synset_names_file {path} line {lineno}: expected 'WNID<TAB>NAME'"
                    )
                names[parts[0]] = parts[1].strip()
    except FileNotFoundError:
        raise UsageError(f"--synset_names_file {path} does not exist") from None
    return names


def read_validation_labels(path: str, files: list[str]) -> list[str]:
    """Returns the wnid of each file in `files` (sorted names) from a labels file (either format)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UsageError(f"validation labels file {path} does not exist") from None
    if text.startswith("ImageId"):
        by_id = {}
        for lineno, row in enumerate(csv.reader(text.splitlines()[1:]), 2):
            if not row:
                continue
            if len(row) < 2 or not row[1].split():
                raise UsageError(f"{path} line {lineno}: expected 'ImageId,WNID ...'")
            by_id[row[0]] = row[1].split()[0]
        labels = []
        for name in files:
            image_id = os.path.splitext(name)[0]
            if image_id not in by_id:
                raise UsageError(f"{path}: no label for validation image {name}")
            labels.append(by_id[image_id])
        return labels
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) != len(files):
        raise UsageError(
            f"{path}: {len(labels)} labels for {len(files)} validation images "
            "(expected one wnid per line, in sorted file-name order)"
        )
    return labels


def _flat_files(val_dir: str) -> list[str]:
    return list_class_dir(val_dir)


def plan_imagenet(
    raw_data_dir: str,
    output_dir: str,
    *,
    train_shards: int = 1024,
    validation_shards: int = 128,
    validation_labels_file: str = "",
    seed: int = 0,
) -> tuple[list[ShardSpec], list[str]]:
    """Lists the dump and assigns every image to a shard. Returns (shard specs, sorted wnids)."""
    if not os.path.isdir(raw_data_dir):
        raise UsageError(f"--raw_data_dir {raw_data_dir} is not a directory")
    check_num_shards("train_shards", train_shards)
    check_num_shards("validation_shards", validation_shards)
    train_dir = os.path.join(raw_data_dir, "train")
    val_dir = os.path.join(raw_data_dir, "val")
    has_train, has_val = os.path.isdir(train_dir), os.path.isdir(val_dir)
    if not has_train and not has_val:
        raise UsageError(f"--raw_data_dir {raw_data_dir}: has neither train/ nor val/")

    wnids: list[str] = list_subdirs(train_dir) if has_train else []
    if has_train and not wnids:
        raise UsageError(f"{train_dir}: expected one folder per wnid, found none")

    val_items: list[tuple[str, str]] = []  # (relative path, wnid)
    if has_val:
        val_wnids = list_subdirs(val_dir)
        if val_wnids:
            for w in val_wnids:
                val_items += [(f"val/{w}/{n}", w) for n in list_class_dir(os.path.join(val_dir, w))]
            # Sorted by file name, as the flat layout and imagenet_to_gcs.py order them.
            val_items.sort(key=lambda x: (os.path.basename(x[0]), x[0]))
        else:
            files = _flat_files(val_dir)
            labels_file = validation_labels_file or next(
                (
                    os.path.join(raw_data_dir, n)
                    for n in DEFAULT_LABEL_FILES
                    if os.path.isfile(os.path.join(raw_data_dir, n))
                ),
                "",
            )
            if not labels_file:
                raise UsageError(
                    f"{val_dir} is flat: give --validation_labels_file (synset_labels.txt or "
                    "LOC_val_solution.csv)"
                )
            labels = read_validation_labels(labels_file, files)
            val_items = [(f"val/{n}", w) for n, w in zip(files, labels, strict=True)]
            val_wnids = sorted(set(labels))
        if not wnids:
            wnids = val_wnids
        unknown = sorted({w for _, w in val_items} - set(wnids))
        if unknown:
            raise UsageError(
                f"validation labels name {len(unknown)} wnid(s) with no train/ folder, "
                f"e.g. {unknown[0]}"
            )

    index = {w: i for i, w in enumerate(wnids)}
    specs: list[ShardSpec] = []
    if has_train:
        train_items = [
            [f"train/{w}/{n}", index[w]]
            for w in wnids
            for n in list_class_dir(os.path.join(train_dir, w))
        ]
        random.Random(seed).shuffle(train_items)
        specs += make_specs(output_dir, "train", train_items, train_shards)
    if has_val:
        specs += make_specs(
            output_dir, "validation", [[p, index[w]] for p, w in val_items], validation_shards
        )
    return specs, wnids


def build_imagenet(
    raw_data_dir: str,
    output_dir: str,
    *,
    train_shards: int = 1024,
    validation_shards: int = 128,
    validation_labels_file: str = "",
    synset_names_file: str = "",
    label_offset: int = 1,
    seed: int = 0,
    options: WriteOptions | None = None,
) -> str | None:
    """Builds `train-*` and `validation-*` shards; returns the manifest path (None while other
    tasks' shards are unfinished). Raises UsageError for a missing or malformed input."""
    options = options or WriteOptions()
    options.validate()
    check_writable(output_dir, "--output_dir")  # before the input is listed and read
    specs, wnids = plan_imagenet(
        raw_data_dir,
        output_dir,
        train_shards=train_shards,
        validation_shards=validation_shards,
        validation_labels_file=validation_labels_file,
        seed=seed,
    )
    names = None
    if synset_names_file:
        mapping = read_synset_names(synset_names_file)
        missing = [w for w in wnids if w not in mapping]
        if missing:
            raise UsageError(
                f"--synset_names_file {synset_names_file} has no name for {missing[0]}"
            )
        names = [mapping[w] for w in wnids]
    return write_classification(
        output_dir,
        raw_data_dir,
        specs,
        wnids,
        names,
        label_offset,
        options,
        builder="imagenet",
        extra_header={"seed": seed},
        input_files=(validation_labels_file, synset_names_file),
    )
