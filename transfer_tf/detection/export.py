"""The detection SavedModel for TF Serving: image bytes in, boxes in original pixels out.

Written by `export.saved_model.export_saved_model(..., module_factory=DetectionServingModule)`
(versioned directory, atomic rename, `labels.txt` asset, model signature), so it loads with
TensorFlow alone (`tf.saved_model.load`, TF Serving, saved_model_cli).

Signatures:
  serving_default       image_bytes: string [B]  encoded JPEG/PNG/GIF/BMP (`_bytes`: TF Serving's
                        REST API takes `{"instances": [{"b64": "..."}]}`)
  serving_image_tensor  images: uint8 [B, H, W, 3] (one size per batch)
Each returns (K = detection.max_detections, best first, rows past num_detections are padding):
  detection_boxes        float32 [B, K, 4]  ymin, xmin, ymax, xmax in ORIGINAL image pixels
  detection_classes      int32   [B, K]     COCO category ids (-1 padding)
  detection_class_names  string  [B, K]     names from the label map ("" padding)
  detection_scores       float32 [B, K]
  num_detections         int32   [B]
Preprocessing in the graph is `data.detection.preprocess_detection_eval` (bytes) and
`data.detection.resize_and_pad` (tensors): the functions the eval input pipeline runs.

Example:
    loaded = tf.saved_model.load("exports/det/1")
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg_bytes]))
    out["detection_boxes"][0, : out["num_detections"][0]]
"""

from __future__ import annotations

import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.data.detection import preprocess_detection_eval, resize_and_pad_batch
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.detection.evaluation import category_ids
from transfer_tf.detection.retinanet import decode
from transfer_tf.export.saved_model import (
    TENSOR_INPUT,
    Untracked,
    add_image_signatures,
    image_signature_functions,
    labels_table,
)

OUTPUTS = (
    "detection_boxes",
    "detection_classes",
    "detection_class_names",
    "detection_scores",
    "num_detections",
)


class DetectionServingModule(tf.Module):
    """The exported object: the detector's variables plus the two serving functions.

    Args:
      model: `detection.retinanet.build_retinanet`'s model.
      cfg: the run's config (detection section, data.num_classes, data.label_map_file).
      labels_path: local text file, one class name per line in class-index order (an asset).
    """

    def __init__(self, model, cfg: ExperimentConfig, labels_path: str):
        super().__init__(name="detector_export")
        # As export.saved_model.ServingModule: only the raw variables are saved.
        self._model = Untracked(model)
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        self._det_cfg = cfg.detection
        self._size = int(cfg.detection.image_size)
        self._max_pixels = int(cfg.export.max_image_pixels)
        label_map = read_label_map(cfg.data.label_map_file) if cfg.data.label_map_file else None
        self._ids = tf.constant(category_ids(label_map, cfg.data.num_classes), tf.int64)
        self.labels_asset = tf.saved_model.Asset(labels_path)
        self.labels_table = labels_table(self.labels_asset)
        size = self._size
        add_image_signatures(self)
        # One traced copy of the detector shared by both signatures.
        self.detect = tf.function(
            self._detect,
            autograph=False,
            input_signature=[
                tf.TensorSpec([None, size, size, 3], tf.uint8, name=TENSOR_INPUT),
                tf.TensorSpec([None, 2], tf.float32, name="image_scale"),
                tf.TensorSpec([None, 2], tf.int32, name="image_hw"),
            ],
        )

    def signatures(self) -> dict:
        """The concrete functions to save, keyed by signature name."""
        return image_signature_functions(self)

    def _detect(self, images, scale, hw) -> dict[str, tf.Tensor]:
        """Detections of preprocessed images, boxes mapped back through each image's scale."""
        out = decode(self._model.value(images, training=False), self._det_cfg)
        valid = out["classes"] >= 0
        index = tf.cast(tf.maximum(out["classes"], 0), tf.int64)
        limit = tf.tile(tf.cast(hw, tf.float32), [1, 2])[:, None, :]
        boxes = tf.clip_by_value(out["boxes"] / tf.tile(scale, [1, 2])[:, None, :], 0.0, limit)
        return {
            "detection_boxes": tf.where(valid[..., None], boxes, 0.0),
            "detection_classes": tf.where(
                valid, tf.cast(tf.gather(self._ids, index), tf.int32), -1
            ),
            "detection_class_names": tf.where(valid, self.labels_table.lookup(index), ""),
            "detection_scores": out["scores"],
            "num_detections": out["num_detections"],
        }

    def _serve_bytes(self, image_bytes):
        # Images differ in size before the resize, so preprocessing is per element.
        images, scale, hw = tf.map_fn(
            lambda b: preprocess_detection_eval(b, self._size, self._max_pixels),
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([self._size, self._size, 3], tf.uint8),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([2], tf.int32),
            ),
        )
        return self.detect(images, scale, hw)

    def _serve_image_tensor(self, images):
        resized, scale, hw = resize_and_pad_batch(images, self._size)
        return self.detect(resized, scale, hw)
