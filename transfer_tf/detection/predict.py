"""Client side of a detection export: detections of image files, printed or drawn onto PNGs.

Uses only the SavedModel's `serving_default` (what a TF Serving client sees): boxes come back in
original image pixels, classes as COCO category ids and names.

Example:
    predictor = export.predict.Predictor("exports/det")
    results = detect_files(predictor, ["street.jpg"], min_score=0.3)
    draw_detections("street.jpg", results[0], "street_boxes.png")
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf

_BATCH = 16


def is_detection_output(output_names) -> bool:
    """Whether a serving signature's outputs are a detector's (`detection.export.OUTPUTS`)."""
    return "detection_boxes" in set(output_names)


def detect_files(predictor, paths: Sequence[str], min_score: float = 0.0) -> list[dict]:
    """Runs `predictor` (an `export.predict.Predictor` over a detection export) on image files.

    Returns one dict per image: {"image": path, "detections": [{"box": [ymin, xmin, ymax, xmax]
    (original pixels), "category_id", "class", "score"}, ...]} best first, scores >= min_score.
    Raises:
      UsageError: a file cannot be read or is not a decodable image (names the file).
    """
    results = []
    for chunk, out in predictor.outputs_of_files(paths, batch_size=_BATCH):
        for row, path in enumerate(chunk):
            detections = []
            for j in range(int(out["num_detections"][row])):
                score = float(out["detection_scores"][row, j])
                if score < min_score:
                    continue
                detections.append(
                    {
                        "box": [round(float(v), 2) for v in out["detection_boxes"][row, j]],
                        "category_id": int(out["detection_classes"][row, j]),
                        "class": out["detection_class_names"][row, j].decode("utf-8"),
                        "score": round(score, 4),
                    }
                )
            results.append({"image": path, "detections": detections})
    return results


def format_detections(results: Sequence[dict]) -> str:
    """One block per image: the path, then `class (id) score  box=[ymin, xmin, ymax, xmax]`."""
    lines = []
    for r in results:
        lines.append(f"{r['image']}: {len(r['detections'])} detections")
        for d in r["detections"]:
            lines.append(
                f"  {d['class']:<20s} (id {d['category_id']:>3d})  {d['score']:.3f}  box={d['box']}"
            )
    return "\n".join(lines)


def draw_detections(image_path: str, result: dict, out_path: str) -> str:
    """Draws `result`'s boxes (with class and score) onto the image; writes a PNG to `out_path`."""
    from PIL import Image, ImageDraw

    with tf.io.gfile.GFile(image_path, "rb") as f:
        image = Image.open(f).convert("RGB")
        image.load()
    draw = ImageDraw.Draw(image)
    palette = ("#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa")
    for d in result["detections"]:
        ymin, xmin, ymax, xmax = d["box"]
        color = palette[d["category_id"] % len(palette)]
        draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=2)
        draw.text((xmin + 2, ymin + 1), f"{d['class']} {d['score']:.2f}", fill=color)
    tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(out_path)))
    image.save(out_path, format="PNG")
    return out_path
