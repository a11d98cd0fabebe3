"""The raw on-disk layouts of ImageNet (ILSVRC2012) and COCO, written from any image source.

The generated sets (`shapes`: drawn objects; `photos`: crops of real photographs) produce pixels;
this module lays them out exactly as the real dumps are, so the builders (`make_imagenet_tfrecords`,
`make_coco_tfrecords`) read them as they read the real thing.

Example:
    tree = write_imagenet_tree("/tmp/raw/inet", ["n0"], ["red circle"], 2, [0], image=my_jpeg)
    # tree.train_dir/n0/n0_0.JPEG, n0_1.JPEG; tree.val_dir/ILSVRC2012_val_00000001.JPEG
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

VAL_LABELS_FILE = "synset_labels.txt"
SYNSET_NAMES_FILE = "synset_names.txt"
COCO_ANNOTATIONS_FILE = "instances.json"
# Sub-folders of a raw tree's root: <root>/train/<wnid>/<file> (ImageNet), <root>/images/<file>
# (COCO), so a caller that reuses a tree finds its images without having written it.
IMAGENET_TRAIN_DIR = "train"
COCO_IMAGE_DIR = "images"


def write_file_atomic(path: str, data: bytes | str) -> None:
    """Writes `data` to local `path` via `path.tmp-<pid>` and a rename (no TensorFlow: the demo
    writes its raw data before the builders fork)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
    os.replace(tmp, path)


def overlap_fraction(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float]
) -> float:
    """Intersection over the smaller box of two `[x0, y0, x1, y1]` boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-6)


@dataclass(frozen=True)
class ImageNetLike:
    """What `write_imagenet_like` wrote (paths are absolute)."""

    root: str
    train_dir: str  # train/<wnid>/<wnid>_<n>.JPEG
    val_dir: str  # val/ILSVRC2012_val_XXXXXXXX.JPEG (flat)
    val_labels_file: str  # one wnid per line, in sorted val file-name order
    synset_names_file: str  # wnid<TAB>name per line, class-index order
    wnids: tuple[str, ...]
    class_names: tuple[str, ...]
    num_train: int
    num_val: int
    val_labels: tuple[int, ...]  # 0-based class index of each val file, sorted file-name order


def write_imagenet_tree(
    root: str,
    wnids: Sequence[str],
    names: Sequence[str],
    train_per_class: int,
    val_labels: Sequence[int],
    image: Callable[[str, int, int], bytes],
) -> ImageNetLike:
    """Writes the ILSVRC2012 layout (see `write_imagenet_like`) from an image source.

    Args:
      root: absolute output folder.
      wnids, names: one per class, in class-index order.
      train_per_class: train images per class; train image n of class k is
        `image("train", k * train_per_class + n, k)`.
      val_labels: the class of each val file, in file-number order; val file i is
        `image("val", i, val_labels[i])`.
      image: (split, index, class) -> encoded JPEG bytes.
    """
    train_dir = os.path.join(root, IMAGENET_TRAIN_DIR)
    val_dir = os.path.join(root, "val")
    for k, w in enumerate(wnids):
        class_dir = os.path.join(train_dir, w)
        os.makedirs(class_dir, exist_ok=True)
        for n in range(train_per_class):
            data = image("train", k * train_per_class + n, k)
            write_file_atomic(os.path.join(class_dir, f"{w}_{n}.JPEG"), data)
    os.makedirs(val_dir, exist_ok=True)
    for i, k in enumerate(val_labels):
        data = image("val", i, k)
        write_file_atomic(os.path.join(val_dir, f"ILSVRC2012_val_{i + 1:08d}.JPEG"), data)

    names_file = os.path.join(root, SYNSET_NAMES_FILE)
    write_file_atomic(names_file, "".join(f"{w}\t{n}\n" for w, n in zip(wnids, names, strict=True)))
    labels_file = os.path.join(root, VAL_LABELS_FILE)
    write_file_atomic(labels_file, "".join(f"{wnids[k]}\n" for k in val_labels))
    return ImageNetLike(
        root=root,
        train_dir=train_dir,
        val_dir=val_dir,
        val_labels_file=labels_file,
        synset_names_file=names_file,
        wnids=tuple(wnids),
        class_names=tuple(names),
        num_train=len(wnids) * train_per_class,
        num_val=len(val_labels),
        val_labels=tuple(val_labels),
    )


@dataclass(frozen=True)
class CocoLike:
    """What `write_coco_like` wrote (paths are absolute)."""

    root: str
    image_dir: str  # images/<12-digit id>.jpg
    annotations_file: str  # instances.json (COCO object-detection format)
    category_ids: tuple[int, ...]  # raw COCO ids, in the order given
    category_names: tuple[str, ...]
    num_images: int
    num_annotations: int


def write_coco_annotations(
    root: str,
    image_dir: str,
    description: str,
    images: list[dict],
    annotations: list[dict],
    categories: list[dict],
) -> CocoLike:
    """Writes root/instances.json (COCO instances format) for images already in `image_dir`.

    `images`, `annotations`, `categories`: COCO JSON records (`id`, `file_name`, ...; `bbox` as
    [x, y, w, h] floats, `category_id`; `id`, `name`, `supercategory`).
    """
    doc = {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    ann_file = os.path.join(root, COCO_ANNOTATIONS_FILE)
    write_file_atomic(ann_file, json.dumps(doc))
    return CocoLike(
        root=root,
        image_dir=image_dir,
        annotations_file=ann_file,
        category_ids=tuple(c["id"] for c in categories),
        category_names=tuple(c["name"] for c in categories),
        num_images=len(images),
        num_annotations=len(annotations),
    )
