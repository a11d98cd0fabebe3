"""Client side of a segmentation export: class maps of image files, printed or drawn as overlays.

Uses only the SavedModel's `serving_default` (what a TF Serving client sees): class maps come
back at each image's original size with the class names.

Example:
    predictor = export.predict.Predictor("exports/seg")
    results = segment_files(predictor, ["street.jpg"])
    draw_overlay("street.jpg", results[0], "street_classes.png")
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

_BATCH = 8
# The overlay's share of each pixel colour (the image keeps the rest).
_ALPHA = 0.5


def is_segmentation_output(output_names) -> bool:
    """Whether a serving signature's outputs are a segmenter's (`segmentation.export.OUTPUTS`)."""
    return "class_map" in set(output_names)


def segment_files(predictor, paths: Sequence[str]) -> list[dict]:
    """Runs `predictor` (an `export.predict.Predictor` over a segmentation export) on image files.

    Returns one dict per image: {"image": path, "class_map": uint8 [H, W] (original size),
    "classes": [{"class", "index", "pixel_fraction", "score"}, ...] of the classes present,
    largest first}.
    Raises:
      UsageError: a file cannot be read or is not a decodable image (names the file).
    """
    results = []
    for chunk, out in predictor.outputs_of_files(paths, batch_size=_BATCH):
        for row, path in enumerate(chunk):
            h, w = (int(v) for v in out["image_hw"][row])
            fraction = out["class_pixel_fraction"][row]
            classes = [
                {
                    "class": out["class_names"][row, c].decode("utf-8"),
                    "index": int(c),
                    "pixel_fraction": round(float(fraction[c]), 4),
                    "score": round(float(out["class_scores"][row, c]), 4),
                }
                for c in np.argsort(-fraction)
                if fraction[c] > 0
            ]
            class_map = np.asarray(out["class_map"][row, :h, :w])
            results.append({"image": path, "class_map": class_map, "classes": classes})
    return results


def format_segments(results: Sequence[dict]) -> str:
    """One block per image: the path and size, then `class  share of pixels  mean score`."""
    lines = []
    for r in results:
        h, w = r["class_map"].shape
        lines.append(f"{r['image']}: {w}x{h}, {len(r['classes'])} classes")
        for c in r["classes"]:
            lines.append(
                f"  {c['class']:<20s} {100 * c['pixel_fraction']:6.2f}% of pixels  "
                f"score {c['score']:.3f}"
            )
    return "\n".join(lines)


def palette(num_classes: int) -> np.ndarray:
    """uint8 [num_classes, 3]: PASCAL VOC's colour map (class 0 black), any number of classes."""
    colours = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        value, shift = c, 7
        while value:
            for channel in range(3):
                colours[c, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colours


def draw_overlay(image_path: str, result: dict, out_path: str) -> str:
    """Blends the class map's colours over the image (background left as it is); writes a PNG to
    `out_path` (through a temporary name, renamed when complete)."""
    from PIL import Image

    with tf.io.gfile.GFile(image_path, "rb") as f:
        image = np.asarray(Image.open(f).convert("RGB"), np.float32)
    class_map = result["class_map"]
    colours = palette(int(class_map.max()) + 1)[class_map].astype(np.float32)
    painted = (class_map > 0)[..., None]
    blended = np.where(painted, (1 - _ALPHA) * image + _ALPHA * colours, image)
    tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(out_path)))
    tmp = f"{out_path}.tmp-{os.getpid()}"
    Image.fromarray(blended.round().astype(np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, out_path)
    return out_path
