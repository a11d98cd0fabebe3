"""COCO detection metrics with pycocotools' COCOeval, on the eval shards.

Ground truth comes from the same eval pass as the detections (`data.detection.DetectionParser`'s
eval targets: original-pixel boxes, crowd flags, annotation areas), so no annotation JSON is
needed and Model Garden's `create_coco_tf_record` shards evaluate the same way. Detections are
mapped back to original image pixels (divided by the eval resize scale, clipped to the image)
and class indices back to COCO category ids through the label map, then scored by COCOeval
("bbox"): AP (IoU .50:.95), AP50, AP75, AP small/medium/large, AR@1/10/100.

Images get ids in the order they are seen: COCOeval only needs ground truth and detections of an
image to share one id.

Example:
    metrics = evaluate_run("runs/det")     # the run's latest checkpoint on its data.eval_pattern
    metrics["AP"], metrics["AP50"]
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import tensorflow as tf

from transfer_tf.config import DetectionConfig, ExperimentConfig
from transfer_tf.data.dataset_fn import dataset_fn
from transfer_tf.data.label_maps import LabelMap, read_label_map
from transfer_tf.detection.retinanet import decode
from transfer_tf.training import checkpoints
from transfer_tf.training.evaluation import evaluate_model

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


class Detector:
    """A detection model plus decoding: `images uint8 [B, S, S, 3] -> retinanet.decode`'s dict
    (boxes in input pixels, scores, class indices, num_detections). Callable like a Keras model
    (`training` is accepted and ignored), so `training.evaluation.evaluate_model` runs it."""

    def __init__(self, model, det_cfg: DetectionConfig):
        self.model = model
        self.det_cfg = det_cfg

    def __call__(self, images, training: bool = False) -> dict[str, tf.Tensor]:
        del training
        return decode(self.model(images, training=False), self.det_cfg)


def category_ids(label_map: LabelMap | None, num_classes: int) -> np.ndarray:
    """int64 [num_classes]: the COCO category id of each class index (the index itself without
    a label map)."""
    ids = np.arange(num_classes, dtype=np.int64)
    if label_map is not None:
        for cid, index in label_map.id_to_index.items():
            ids[index] = cid
    return ids


def to_original_pixels(boxes: np.ndarray, scale: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """yxyx boxes [..., 4] in model-input pixels -> original pixels (`/ scale`, clipped to hw)."""
    out = boxes / np.tile(scale, 2)
    return np.clip(out, 0.0, np.tile(hw, 2).astype(np.float32))


def _xywh(yxyx: np.ndarray) -> list[float]:
    y0, x0, y1, x1 = (float(v) for v in yxyx)
    return [x0, y0, x1 - x0, y1 - y0]


class CocoAccumulator:
    """Collects ground truth and detections batch by batch; `result()` runs COCOeval.

    `update(labels, detections)`: numpy dicts of one global batch, the eval targets of
    `DetectionParser` and the `Detector`'s outputs.
    """

    def __init__(self, ids: np.ndarray):
        self.ids = ids
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.detections: list[dict] = []

    def update(self, labels: dict, detections: dict) -> None:
        for b in range(len(labels["image_hw"])):
            image_id = len(self.images) + 1
            hw = labels["image_hw"][b]
            self.images.append({"id": image_id, "height": int(hw[0]), "width": int(hw[1])})
            for j in np.flatnonzero(labels["gt_classes"][b] >= 0):
                self.annotations.append(
                    {
                        "id": len(self.annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(self.ids[labels["gt_classes"][b][j]]),
                        "bbox": _xywh(labels["gt_boxes"][b][j]),
                        "area": float(labels["gt_area"][b][j]),
                        "iscrowd": int(labels["gt_is_crowd"][b][j]),
                    }
                )
            n = int(detections["num_detections"][b])
            boxes = to_original_pixels(detections["boxes"][b][:n], labels["image_scale"][b], hw)
            for box, score, cls in zip(
                boxes, detections["scores"][b][:n], detections["classes"][b][:n], strict=True
            ):
                self.detections.append(
                    {
                        "image_id": image_id,
                        "category_id": int(self.ids[int(cls)]),
                        "bbox": _xywh(box),
                        "score": float(score),
                    }
                )

    def result(self) -> dict:
        """{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
        "num_images", "num_detections"}; -1 where COCOeval has no ground truth (e.g. no large
        objects), all 0 without detections."""
        return coco_metrics(self.images, self.annotations, self.detections, self.ids)


def coco_metrics(
    images: list[dict], annotations: list[dict], detections: list[dict], ids: np.ndarray
) -> dict:
    """COCOeval ("bbox") of COCO-format ground truth and detections (see `CocoAccumulator`)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = {"num_images": len(images), "num_detections": len(detections)}
    if not detections or not annotations:
        return {**dict.fromkeys(STAT_NAMES, 0.0), **out}
    # pycocotools prints progress and its summary table; the metrics come back as numbers.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": int(i)} for i in ids],
        }
        gt.createIndex()
        dt = gt.loadRes(detections)
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats, strict=True)}
    return {**stats, **out}


def accumulator_for(cfg: ExperimentConfig) -> CocoAccumulator:
    """The run's accumulator: class index -> category id from data.label_map_file."""
    label_map = read_label_map(cfg.data.label_map_file) if cfg.data.label_map_file else None
    return CocoAccumulator(category_ids(label_map, cfg.data.num_classes))


def evaluate_run(model_dir: str, checkpoint: str | None = None, eval_pattern: str = "") -> dict:
    """COCO metrics of a detection run's checkpoint (default the latest) on its eval shards
    (`eval_pattern` overrides data.eval_pattern)."""
    model, cfg, prefix = checkpoints.load_model_checkpoint(model_dir, checkpoint)
    if eval_pattern:
        cfg.data.eval_pattern = eval_pattern
    strategy = tf.distribute.get_strategy()
    metrics = evaluate_model(
        Detector(model, cfg.detection), strategy, dataset_fn(cfg, "eval"), accumulator_for(cfg)
    )
    metrics["checkpoint"] = prefix  # the one restored (a damaged newest one is skipped)
    return metrics
