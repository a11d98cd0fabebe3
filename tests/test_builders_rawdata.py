"""Small raw datasets in the real on-disk layouts, with the bad files real dumps contain.

Helpers for the builder tests (this module holds no tests itself).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image


def image_bytes(
    seed: int, size: tuple[int, int] = (48, 64), mode: str = "RGB", fmt: str = "JPEG"
) -> bytes:
    """A real encoded image of `size` (height, width) whose pixels depend on `seed`."""
    h, w = size
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: compresses like a photo, differs per seed.
    base = rng.integers(0, 256, size=(1, 1, 3))
    ramp = np.linspace(0, 120, w)[None, :, None] + np.linspace(0, 60, h)[:, None, None]
    arr = np.clip(base + ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def truncated_jpeg(seed: int) -> bytes:
    data = image_bytes(seed, (64, 80))
    return data[: len(data) // 2]


def make_imagenet(
    root: str,
    wnids: tuple[str, ...] = ("n01440764", "n01443537", "n02102040"),
    per_class: int = 4,
    val_per_class: int = 2,
    val_layout: str = "folders",
) -> dict:
    """Writes `root/train/<wnid>/*.JPEG` and `root/val/...` (layout `folders`, `flat_txt` or
    `flat_csv`), with one CMYK JPEG, one PNG saved as .JPEG, one grayscale JPEG, one truncated
    and one zero-byte file in train. Returns the expected labels: {relative path: wnid} of the
    good files, and the lists of bad and converted files."""
    good, bad, converted = {}, [], []
    seed = 0
    for w in wnids:
        for j in range(per_class):
            rel = f"train/{w}/{w}_{j}.JPEG"
            write(os.path.join(root, rel), image_bytes(seed, (40 + 8 * j, 56 + 4 * j)))
            good[rel] = w
            seed += 1
    specials = {
        f"train/{wnids[0]}/{wnids[0]}_cmyk.JPEG": image_bytes(100, mode="CMYK"),
        f"train/{wnids[1]}/{wnids[1]}_png.JPEG": image_bytes(101, fmt="PNG"),
        f"train/{wnids[2]}/{wnids[2]}_gray.JPEG": image_bytes(102, mode="L"),
    }
    for rel, data in specials.items():
        write(os.path.join(root, rel), data)
        good[rel] = rel.split("/")[1]
        converted.append(rel)
    for rel, data in {
        f"train/{wnids[0]}/{wnids[0]}_truncated.JPEG": truncated_jpeg(103),
        f"train/{wnids[1]}/{wnids[1]}_empty.JPEG": b"",
    }.items():
        write(os.path.join(root, rel), data)
        bad.append(rel)
    val_names, val_labels = [], []
    for i in range(val_per_class * len(wnids)):
        w = wnids[i % len(wnids)]
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        rel = f"val/{w}/{name}" if val_layout == "folders" else f"val/{name}"
        write(os.path.join(root, rel), image_bytes(200 + i, (50, 50)))
        good[rel] = w
        val_names.append(name)
        val_labels.append(w)
    if val_layout == "flat_txt":
        with open(os.path.join(root, "synset_labels.txt"), "w") as f:
            f.write("".join(w + "\n" for w in val_labels))
    elif val_layout == "flat_csv":
        with open(os.path.join(root, "LOC_val_solution.csv"), "w") as f:
            f.write("ImageId,PredictionString\n")
            for name, w in zip(val_names, val_labels, strict=True):
                f.write(f"{os.path.splitext(name)[0]},{w} 1 2 30 40 {w} 5 6 20 20\n")
    return {"good": good, "bad": bad, "converted": converted}


def make_coco(root: str, *, with_masks: bool = True) -> dict:
    """Writes `root/images/*.jpg` and `root/instances.json`: several objects per image,
    non-contiguous category ids, an image without annotations, degenerate boxes, a missing
    file, a truncated file, a path escaping the image dir, a CMYK image. Returns the JSON dict and
    the ids of the images expected in the shards."""
    categories = [
        {"id": 90, "name": "toothbrush"},
        {"id": 1, "name": "person"},
        {"id": 18, "name": "dog"},
    ]
    images, annotations = [], []
    ann_id = 1
    sizes = [(48, 64), (60, 40), (40, 40), (56, 72), (48, 48), (64, 64)]
    for i, (h, w) in enumerate(sizes):
        image_id = 1000 + i
        name = f"{image_id:012d}.jpg"
        mode = "CMYK" if i == 3 else "RGB"
        write(os.path.join(root, "images", name), image_bytes(300 + i, (h, w), mode=mode))
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        if i == 2:
            continue  # an image without annotations
        for k in range(1 + i % 3):
            cat = [1, 18, 90][(i + k) % 3]
            x, y, bw, bh = 2.0 + k, 3.0 + 2 * k, w / 3, h / 4
            poly = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": poly,
                }
            )
            ann_id += 1
    # Degenerate boxes on image 1000: zero width, and reaching outside the image.
    for bbox in ([5.0, 5.0, 0.0, 10.0], [50.0, 5.0, 30.0, 10.0]):
        annotations.append(
            {
                "id": ann_id,
                "image_id": 1000,
                "category_id": 1,
                "bbox": bbox,
                "area": 1.0,
                "iscrowd": 0,
                "segmentation": [[5, 5, 6, 5, 6, 6]],
            }
        )
        ann_id += 1
    # A crowd annotation with an RLE mask on image 1001 (h=60, w=40).
    rle_counts = [0, 60 * 10, 60 * 30]
    annotations.append(
        {
            "id": ann_id,
            "image_id": 1001,
            "category_id": 18,
            "bbox": [10.0, 0.0, 10.0, 60.0],
            "area": 600.0,
            "iscrowd": 1,
            "segmentation": {"size": [60, 40], "counts": rle_counts},
        }
    )
    ann_id += 1
    bad_images = [
        {"id": 2000, "file_name": "missing.jpg", "height": 10, "width": 10},
        {"id": 2001, "file_name": "truncated.jpg", "height": 64, "width": 80},
        {"id": 2002, "file_name": "../../etc/passwd", "height": 10, "width": 10},
    ]
    write(os.path.join(root, "images", "truncated.jpg"), truncated_jpeg(7))
    for im in bad_images:
        annotations.append(
            {
                "id": ann_id,
                "image_id": im["id"],
                "category_id": 1,
                "bbox": [1.0, 1.0, 5.0, 5.0],
                "area": 25.0,
                "iscrowd": 0,
                "segmentation": [[1, 1, 6, 1, 6, 6]],
            }
        )
        ann_id += 1
    data = {"images": images + bad_images, "annotations": annotations, "categories": categories}
    with open(os.path.join(root, "instances.json"), "w") as f:
        json.dump(data, f)
    return {"json": data, "good_ids": [im["id"] for im in images], "bad_ids": [2000, 2001, 2002]}
