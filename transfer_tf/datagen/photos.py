"""Real-photo transfer sets: an ImageNet-layout dump and a COCO-layout dump cut from photographs.

The transfer benchmark's data (`benchmarks.transfer_photos`), from a handful of real photographs
(the sample images inside the scikit-image and matplotlib wheels: `extract_wheel_photos`), so
that what transfers is the texture and colour statistics of real images, not drawn shapes:

* ImageNet layout (`write_photo_imagenet`): class k is photograph k; each image is a random crop
  (`crop_area` of the photo's area, aspect 3/4..4/3), maybe mirrored, resized so its long side is
  drawn from `image_size_range`. `root/train/<wnid>/<wnid>_<n>.JPEG`, flat
  `root/val/ILSVRC2012_val_<8 digits>.JPEG`, `synset_labels.txt` and `synset_names.txt`, as
  `shapes.write_imagenet_like` (what `builders.build_imagenet` reads).
* COCO layout (`write_photo_coco`): a random crop of a BACKGROUND photograph (one that is no
  class) as the canvas, with 0..N crops of the object photographs pasted at `object_size`
  (fraction of the canvas' short side) and little overlap; boxes are the pasted rectangles,
  exact in pixels. `empty_fraction` of the images hold no object. `root/images/<12 digits>.jpg`
  and `root/instances.json` (`builders.build_coco` reads them).

Every image comes from its own rng `(seed, split salt, index)`, so a seed gives the same files.
The COCO objects are crops drawn with other seeds than the ImageNet ones (held out).

`textured_photos` writes procedurally textured, photo-like images (smooth colour fields, a
palette, oriented stripes and noise per "photo") for tests that must run without any photograph.

Example:
    photos = extract_wheel_photos(["scikit_image-0.26.0-....whl"], "/tmp/photos")
    inet = write_photo_imagenet("/tmp/raw/imagenet", load_photos("/tmp/photos"))
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

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

# The real photographs of the scikit-image 0.26 and matplotlib 3.x wheels (11, as the input
# benchmark uses). Other wheels' images can be named explicitly.
WHEEL_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "color.png",
    "grace_hopper.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)
_SALT = {"train": 11, "val": 12, "coco_train": 13, "coco_val": 14}
# Photos are reduced once to this long side before cropping (crops become tiny images anyway).
_WORKING_SIDE = 384
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_photos(photo_dir: str) -> list[Image.Image]:
    """Every photo in `photo_dir` as RGB, in sorted name order (so a seed means the same set)."""
    if not photo_dir or not os.path.isdir(photo_dir):
        raise UsageError(f"photo_dir '{photo_dir}': not a folder (kind=photos needs photographs)")
    names = sorted(n for n in os.listdir(photo_dir) if n.lower().endswith(PHOTO_SUFFIXES))
    if not names:
        raise UsageError(f"photo_dir '{photo_dir}': no *.jpg/*.jpeg/*.png images in it")
    photos = []
    for name in names:
        with Image.open(os.path.join(photo_dir, name)) as im:
            # convert() also forces the lazy decode, so the file can be closed here.
            photos.append(im.convert("RGB"))
    return photos


def extract_wheel_photos(
    wheels: Sequence[str], output_dir: str, names: Sequence[str] = WHEEL_PHOTOS
) -> list[str]:
    """Copies the photographs `names` out of downloaded wheels (zip files) into `output_dir`.

    Get the wheels with e.g. `pip download --no-deps scikit-image==0.26.0 matplotlib==3.11.2
    -d DIR` (no install needed). A member matches by file name anywhere in the wheel (e.g.
    `skimage/data/astronaut.png`, `matplotlib/mpl-data/sample_data/grace_hopper.jpg`).
    Returns the written paths, sorted. Raises UsageError when none of `names` is found.
    """
    wanted = set(names)
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                base = os.path.basename(member)
                if base in wanted:
                    path = os.path.join(output_dir, base)
                    with open(f"{path}.tmp", "wb") as f:
                        f.write(z.read(member))
                    os.replace(f"{path}.tmp", path)
                    written.append(path)
                    wanted.discard(base)
    if not written:
        raise UsageError(f"wheels {list(wheels)}: none of the photographs {list(names)} in them")
    return sorted(written)


def textured_photos(output_dir: str, count: int = 6, side: int = 160, seed: int = 0) -> list[str]:
    """Writes `count` photo-like PNGs (each its own palette, smooth field, stripes and grain)."""
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for k in range(count):
        rng = np.random.default_rng([seed, 99, k])
        coarse = rng.uniform(0, 255, size=(5, 5, 3)).astype(np.uint8)
        field = np.asarray(
            Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC), np.float32
        )
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(4, 20)
        stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        tint = rng.uniform(-80, 80, size=3).astype(np.float32)
        image = field + stripes[..., None] * tint + rng.normal(0, 12, size=(side, side, 3))
        path = os.path.join(output_dir, f"texture_{k:02d}.png")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _working_copy(photo: Image.Image) -> Image.Image:
    w, h = photo.size
    scale = _WORKING_SIDE / max(w, h)
    if scale >= 1:
        return photo
    return photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SALT[split], int(index)])


def _crop(
    photo: Image.Image,
    rng: np.random.Generator,
    area: tuple[float, float],
    aspect_max: float = 4 / 3,
) -> Image.Image:
    """A random crop of `area` (fraction range) of the photo, aspect in [1/aspect_max, aspect_max]
    where the photo allows it, mirrored half the time."""
    w, h = photo.size
    frac = rng.uniform(*area)
    ratio = np.exp(rng.uniform(-np.log(aspect_max), np.log(aspect_max)))
    cw = int(min(w, max(4, round(np.sqrt(frac * w * h * ratio)))))
    ch = int(min(h, max(4, round(np.sqrt(frac * w * h / ratio)))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    image = photo.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def _resize_long(image: Image.Image, long_side: int) -> Image.Image:
    w, h = image.size
    scale = long_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def write_photo_imagenet(
    root: str,
    photos: Sequence[Image.Image],
    *,
    names: Sequence[str] | None = None,
    train_per_class: int = 60,
    val_per_class: int = 10,
    image_size_range: tuple[int, int] = (64, 96),
    crop_area: tuple[float, float] = (0.1, 0.6),
    seed: int = 0,
) -> ImageNetLike:
    """Writes the ImageNet-layout set (see module doc): class k = `photos[k]`."""
    if len(photos) < 2:
        raise UsageError(f"{len(photos)} photographs: the ImageNet-layout set needs >= 2 classes")
    if train_per_class < 1 or val_per_class < 1:
        raise UsageError("train_per_class and val_per_class must be >= 1")
    photos = [_working_copy(p) for p in photos]
    root = os.path.abspath(root)
    wnids = tuple(f"n{k:08d}" for k in range(len(photos)))
    names = tuple(names or (f"photo {k}" for k in range(len(photos))))

    def image(split: str, index: int, k: int) -> bytes:
        rng = _rng(seed, split, index)
        crop = _crop(photos[k], rng, crop_area)
        long_side = int(rng.integers(image_size_range[0], image_size_range[1] + 1))
        return _jpeg(_resize_long(crop, long_side), rng)

    num_val = len(photos) * val_per_class
    order = np.random.default_rng([int(seed), _SALT["val"]]).permutation(num_val)
    val_labels = tuple(int(order[i] % len(photos)) for i in range(num_val))
    return write_imagenet_tree(root, wnids, names, train_per_class, val_labels, image)


def write_photo_coco(
    root: str,
    object_photos: Sequence[Image.Image],
    background_photos: Sequence[Image.Image],
    *,
    category_ids: Sequence[int],
    names: Sequence[str] | None = None,
    num_images: int = 240,
    objects_per_image: tuple[int, int] = (1, 3),
    empty_fraction: float = 0.1,
    object_size: tuple[float, float] = (0.2, 0.5),
    image_size_range: tuple[int, int] = (64, 96),
    split: str = "coco_train",
    seed: int = 0,
    first_image_id: int = 1,
) -> CocoLike:
    """Writes the COCO-layout multi-object set (see module doc). Category `category_ids[i]` is
    `object_photos[i]`. `split` is `coco_train` or `coco_val` (independent images)."""
    ids = [int(c) for c in category_ids]
    if len(ids) != len(object_photos) or len(set(ids)) != len(ids) or min(ids) < 1:
        raise UsageError(
            f"category_ids={ids}: expected one distinct positive id per object photograph "
            f"({len(object_photos)})"
        )
    if not background_photos:
        raise UsageError("write_photo_coco needs at least one background photograph")
    if split not in ("coco_train", "coco_val"):
        raise UsageError(f"split={split!r}: expected coco_train or coco_val")
    objects = [_working_copy(p) for p in object_photos]
    backgrounds = [_working_copy(p) for p in background_photos]
    names = list(names or (f"photo {i}" for i in range(len(ids))))
    root = os.path.abspath(root)
    image_dir = os.path.join(root, COCO_IMAGE_DIR)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    lo_obj, hi_obj = objects_per_image
    for n in range(num_images):
        rng = _rng(seed, split, n)
        image_id = first_image_id + n
        canvas = _crop(backgrounds[int(rng.integers(len(backgrounds)))], rng, (0.3, 1.0))
        long_side = int(rng.integers(image_size_range[0], image_size_range[1] + 1))
        canvas = _resize_long(canvas, long_side).copy()
        width, height = canvas.size
        count = 0 if rng.random() < empty_fraction else int(rng.integers(lo_obj, hi_obj + 1))
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(count):
            cat = int(rng.integers(len(ids)))
            patch = _crop(objects[cat], rng, (0.2, 0.8))
            for _attempt in range(10):
                side = max(4, round(rng.uniform(*object_size) * min(width, height)))
                pw, ph = patch.size
                scale = side / max(pw, ph)
                pw, ph = max(2, round(pw * scale)), max(2, round(ph * scale))
                x0 = int(rng.integers(0, width - pw + 1))
                y0 = int(rng.integers(0, height - ph + 1))
                box = (x0, y0, x0 + pw, y0 + ph)
                if all(overlap_fraction(box, b) < 0.2 for b in boxes):
                    break
            else:
                continue
            canvas.paste(patch.resize((pw, ph), Image.Resampling.BICUBIC), (x0, y0))
            boxes.append(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": ids[cat],
                    "bbox": [x0, y0, pw, ph],
                    # The pasted patch is the object: its rectangle is the exact mask (minus
                    # what a later paste covers, which the segmentation class map ignores).
                    "segmentation": [[x0, y0, x0 + pw, y0, x0 + pw, y0 + ph, x0, y0 + ph]],
                    "area": pw * ph,
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:012d}.jpg"
        write_file_atomic(os.path.join(image_dir, file_name), _jpeg(canvas, rng))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    categories = [
        {"id": c, "name": name, "supercategory": "photo"}
        for c, name in zip(ids, names, strict=True)
    ]
    return write_coco_annotations(
        root, image_dir, "transfer_tf real-photo COCO-layout set", images, annotations, categories
    )
