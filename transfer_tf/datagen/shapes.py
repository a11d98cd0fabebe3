"""Small, learnable raw datasets in the REAL ImageNet and COCO on-disk layouts.

Used by the demo, the tests and the benchmarks: everything downstream (builders, input pipeline,
training, transfer) sees exactly the files it would see on a real dump, only smaller.

The visual vocabulary is a set of procedurally drawn objects: class = shape x colour (e.g. "red
circle", "blue star"), drawn at a random position and scale, with a jittered colour, on a cluttered
noisy background. At 32-64 px a small CNN learns it in a few epochs. The COCO-like scenes compose
the same vocabulary (several objects per image), so pretraining on the ImageNet-like set helps the
multi-label transfer task, as ImageNet pretraining helps COCO.

Everything is deterministic from `seed`: each image has its own generator derived from
(seed, split, index), so the same call writes byte-identical files.

Example:
    inet = write_imagenet_like("/tmp/raw/imagenet", num_classes=10, train_per_class=50,
                               val_per_class=10, image_size_range=(48, 96), seed=0)
    coco = write_coco_like("/tmp/raw/coco", num_images=200, category_ids=[1, 3, 7, 8, 13, 22],
                           objects_per_image=(1, 3), seed=0)
    # make_imagenet_tfrecords --raw_data_dir=inet.root ...; make_coco_tfrecords
    #   --image_dir=coco.image_dir --object_annotations_file=coco.annotations_file ...
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from transfer_tf.datagen.raw_layouts import (
    COCO_IMAGE_DIR,
    CocoLike,
    ImageNetLike,
    overlap_fraction,
    write_coco_annotations,
    write_file_atomic,
    write_imagenet_tree,
)
from transfer_tf.errors import UsageError

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
# Saturated, well-separated colours; the background clutter is kept desaturated so it never looks
# like an object.
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 20),
    "magenta": (210, 40, 200),
    "cyan": (20, 200, 210),
}
_COLOR_NAMES = tuple(COLORS)
MAX_CLASSES = len(SHAPES) * len(COLORS)

# Per-split salts for the per-image generators (so train/val/coco never share pixels).
_SALT = {"train": 1, "val": 2, "coco": 3}


# ----------------------------------------------------------------------------------------------
# The vocabulary.
# ----------------------------------------------------------------------------------------------


def class_name(index: int) -> str:
    """Human-readable name of vocabulary class `index`, e.g. 0 -> "red circle"."""
    _check_class(index)
    shape, color = _shape_color(index)
    return f"{color} {shape}"


def _shape_color(index: int) -> tuple[str, str]:
    # A Latin-square walk over shape x colour: the first 6 classes already differ in both, so
    # neither colour nor shape alone separates any prefix of the vocabulary.
    shape = index % len(SHAPES)
    color = (index % len(SHAPES) + index // len(SHAPES)) % len(COLORS)
    return SHAPES[shape], _COLOR_NAMES[color]


def wnid(index: int) -> str:
    """Fake WordNet id of vocabulary class `index` (`n00000007`): sorted wnids = class order."""
    _check_class(index)
    return f"n{index:08d}"


def _check_class(index: int) -> None:
    if not 0 <= index < MAX_CLASSES:
        raise UsageError(
            f"synthetic class index {index} is out of range: the vocabulary has {MAX_CLASSES} "
            f"classes ({len(SHAPES)} shapes x {len(COLORS)} colours)"
        )


def _unit_polygon(shape: str, rotation: float) -> np.ndarray:
    """Vertices `[N, 2]` of `shape` inscribed in the unit circle, rotated by `rotation` radians."""
    if shape == "circle":
        angles = np.linspace(0.0, 2 * math.pi, 24, endpoint=False)
        pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif shape == "square":
        s = 1 / math.sqrt(2)
        pts = np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    elif shape == "diamond":
        pts = np.array([[0.0, -1.0], [0.65, 0.0], [0.0, 1.0], [-0.65, 0.0]])
    elif shape == "triangle":
        angles = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif shape == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    elif shape == "cross":
        a, b = 0.3, 0.95
        pts = np.array(
            [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a],
             [-b, a], [-b, -a], [-a, -a]]
        )  # fmt: skip
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)
    c, s = math.cos(rotation), math.sin(rotation)
    return pts @ np.array([[c, s], [-s, c]])


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A desaturated gradient with line/blob clutter (objects are the only saturated things)."""
    base = rng.uniform(60, 200)
    gx, gy = rng.uniform(-40, 40, size=2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gray = base + gx * (xx / max(width - 1, 1) - 0.5) + gy * (yy / max(height - 1, 1) - 0.5)
    tint = rng.uniform(-12, 12, size=3)
    arr = np.clip(gray[..., None] + tint, 0, 255).astype(np.uint8)
    image = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        g = int(rng.uniform(30, 230))
        col = tuple(int(np.clip(g + rng.uniform(-15, 15), 0, 255)) for _ in range(3))
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
        if rng.random() < 0.6:
            draw.line([(x0, y0), (x1, y1)], fill=col, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(2, max(3, min(width, height) / 8))
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=col)
    return image


def _draw_object(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    index: int,
    center: tuple[float, float],
    radius: float,
) -> list[tuple[float, float]]:
    """Draws vocabulary class `index`; returns its outline polygon in pixel coordinates."""
    shape, color = _shape_color(index)
    rgb = np.array(COLORS[color], dtype=np.float32)
    rgb = np.clip(rgb + rng.uniform(-25, 25, size=3), 0, 255)
    # Small rotations only: a 45-degree square would be a diamond.
    rotation = rng.uniform(-0.25, 0.25)
    pts = _unit_polygon(shape, rotation) * radius + np.asarray(center)
    polygon = [(float(x), float(y)) for x, y in pts]
    draw.polygon(polygon, fill=tuple(int(v) for v in rgb))
    return polygon


def _add_noise_and_encode(
    rng: np.random.Generator, image: Image.Image, ext_format: str = "JPEG"
) -> bytes:
    arr = np.asarray(image, dtype=np.float32)
    arr = arr + rng.normal(0.0, rng.uniform(3, 10), size=arr.shape)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    out.save(buf, format=ext_format, quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SALT[split], int(index)])


def _size(rng: np.random.Generator, size_range: tuple[int, int]) -> tuple[int, int]:
    lo, hi = size_range
    width, height = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    return width, height


def _imagenet_image(rng: np.random.Generator, index: int, size_range: tuple[int, int]) -> bytes:
    width, height = _size(rng, size_range)
    image = _background(rng, width, height)
    short = min(width, height)
    # Objects cover a good part of the frame (ImageNet objects do), at a random position.
    radius = rng.uniform(0.2, 0.42) * short
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    _draw_object(ImageDraw.Draw(image), rng, index, (cx, cy), radius)
    return _add_noise_and_encode(rng, image)


def write_imagenet_like(
    root: str,
    num_classes: int = 10,
    train_per_class: int = 50,
    val_per_class: int = 10,
    image_size_range: tuple[int, int] = (48, 96),
    seed: int = 0,
) -> ImageNetLike:
    """Writes an ILSVRC2012-layout tree of procedurally drawn objects under `root`.

    Layout (the tensorflow/tpu imagenet_to_gcs.py input convention):
      root/train/<wnid>/<wnid>_<n>.JPEG
      root/val/ILSVRC2012_val_<8 digits>.JPEG            (flat, 1-based numbering)
      root/synset_labels.txt    one wnid per line, the label of each val file in sorted name order
      root/synset_names.txt     `wnid<TAB>name`, one per class in class-index order

    Images are RGB JPEGs with width and height each drawn from `image_size_range` (pixels).
    Class k is vocabulary class k (`class_name(k)`), its wnid `n0000000k`. `synset_labels.txt` is
    written last, so its presence marks a complete tree.

    Raises:
      UsageError: num_classes beyond the vocabulary, non-positive counts or sizes.
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise UsageError(f"num_classes={num_classes}: expected 1..{MAX_CLASSES}")
    if train_per_class < 1 or val_per_class < 1:
        raise UsageError(
            f"train_per_class={train_per_class}, val_per_class={val_per_class}: expected >= 1"
        )
    lo, hi = image_size_range
    if not 16 <= lo <= hi:
        raise UsageError(f"image_size_range={image_size_range}: expected 16 <= min <= max")
    root = os.path.abspath(root)
    wnids = tuple(wnid(k) for k in range(num_classes))
    names = tuple(class_name(k) for k in range(num_classes))

    # Val labels are shuffled over file numbers, as in the real val set.
    num_val = num_classes * val_per_class
    order = np.random.default_rng([int(seed), _SALT["val"]]).permutation(num_val)
    val_labels = tuple(int(order[i] % num_classes) for i in range(num_val))

    def image(split: str, index: int, k: int) -> bytes:
        return _imagenet_image(_rng(seed, split, index), k, image_size_range)

    return write_imagenet_tree(root, wnids, names, train_per_class, val_labels, image)


# ----------------------------------------------------------------------------------------------
# COCO-like.
# ----------------------------------------------------------------------------------------------


def _polygon_area(polygon: Sequence[tuple[float, float]]) -> float:
    xs = np.array([p[0] for p in polygon])
    ys = np.array([p[1] for p in polygon])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def write_coco_like(
    root: str,
    num_images: int = 200,
    category_ids: Sequence[int] = (1, 3, 4, 7, 9, 13, 18, 22),
    objects_per_image: tuple[int, int] = (1, 3),
    seed: int = 0,
    image_size_range: tuple[int, int] = (64, 112),
    first_image_id: int = 1,
) -> CocoLike:
    """Writes a COCO-format detection set of scenes composed from the shared vocabulary.

    Layout (what Model Garden's create_coco_tf_record.py reads):
      root/images/<12-digit image id>.jpg
      root/instances.json   {info, licenses, images, annotations, categories}

    Category `category_ids[i]` (raw COCO id; give ids with gaps as in real COCO) is vocabulary
    class i, named `class_name(i)`, so an ImageNet-like model pretrained on the same vocabulary
    transfers. Each image holds `objects_per_image` (inclusive range) objects, placed with little
    overlap so every labelled object is visible. Annotations carry `bbox` `[x, y, w, h]` (pixels),
    the polygon `segmentation`, its `area`, and `iscrowd` 0. `instances.json` is written last, so
    its presence marks a complete set.

    Raises:
      UsageError: empty/duplicate/non-positive category ids, too many categories, bad ranges.
    """
    ids = [int(c) for c in category_ids]
    if not ids or len(set(ids)) != len(ids) or min(ids) < 1:
        raise UsageError(f"category_ids={list(category_ids)}: expected distinct positive ids")
    if len(ids) > MAX_CLASSES:
        raise UsageError(f"{len(ids)} categories: the vocabulary has only {MAX_CLASSES} classes")
    lo_obj, hi_obj = objects_per_image
    if not 1 <= lo_obj <= hi_obj:
        raise UsageError(f"objects_per_image={objects_per_image}: expected 1 <= min <= max")
    if num_images < 1:
        raise UsageError(f"num_images={num_images}: expected >= 1")
    lo, hi = image_size_range
    if not 32 <= lo <= hi:
        raise UsageError(f"image_size_range={image_size_range}: expected 32 <= min <= max")
    root = os.path.abspath(root)
    image_dir = os.path.join(root, COCO_IMAGE_DIR)
    os.makedirs(image_dir, exist_ok=True)
    names = [class_name(i) for i in range(len(ids))]

    images, annotations = [], []
    for n in range(num_images):
        image_id = first_image_id + n
        rng = _rng(seed, "coco", n)
        width, height = _size(rng, image_size_range)
        image = _background(rng, width, height)
        draw = ImageDraw.Draw(image)
        boxes: list[tuple[float, float, float, float]] = []
        for _ in range(int(rng.integers(lo_obj, hi_obj + 1))):
            cat = int(rng.integers(len(ids)))
            short = min(width, height)
            # A few placement attempts; an object that cannot be placed clearly is left out.
            for _attempt in range(10):
                radius = rng.uniform(0.12, 0.25) * short
                cx = rng.uniform(radius, width - radius)
                cy = rng.uniform(radius, height - radius)
                box = (cx - radius, cy - radius, cx + radius, cy + radius)
                if all(overlap_fraction(box, b) < 0.2 for b in boxes):
                    break
            else:
                continue
            polygon = _draw_object(draw, rng, cat, (cx, cy), radius)
            xs = [p[0] for p in polygon]
            ys = [p[1] for p in polygon]
            x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
            x1, y1 = min(float(width), max(xs)), min(float(height), max(ys))
            boxes.append(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": ids[cat],
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round(_polygon_area(polygon), 2),
                    "iscrowd": 0,
                    "segmentation": [[round(v, 2) for p in polygon for v in p]],
                }
            )
        file_name = f"{image_id:012d}.jpg"
        write_file_atomic(os.path.join(image_dir, file_name), _add_noise_and_encode(rng, image))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})

    categories = [
        {"id": c, "name": name, "supercategory": name.split()[1]}
        for c, name in zip(ids, names, strict=True)
    ]
    return write_coco_annotations(
        root, image_dir, "transfer_tf synthetic COCO-like scenes", images, annotations, categories
    )
