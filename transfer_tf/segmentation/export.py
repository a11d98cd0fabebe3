"""The segmentation SavedModel for TF Serving: image bytes in, class maps at original size out.

Written by `export.saved_model.export_saved_model(..., module_factory=SegmentationServingModule,
names=evaluation.class_names(cfg))` (versioned directory, atomic rename, `labels.txt` asset with
the class map's names, model signature), so it loads with TensorFlow alone.

Signatures:
  serving_default       image_bytes: string [B]  encoded JPEG/PNG/GIF/BMP
  serving_image_tensor  images: uint8 [B, H, W, 3] (one size per batch)
Each returns (C = classes of the class map, H x W = the batch's largest original size):
  class_map             uint8   [B, H, W]  class index per pixel at the ORIGINAL size; 255
                                           outside an image smaller than the batch's largest
  image_hw              int32   [B, 2]     each image's original height and width
  class_scores          float32 [B, C]     mean softmax probability of class c over the pixels
                                           predicted c (0 where none is)
  class_pixel_fraction  float32 [B, C]     share of the image's pixels predicted c
  class_names           string  [B, C]     the class names (the same row for every image)
Preprocessing in the graph is `data.segmentation.preprocess_segmentation_eval` (bytes) and
`data.detection.resize_and_pad` (tensors), and the logits become class maps through
`segmentation.model.class_map_at_original`: what the evaluation runs.

Example:
    loaded = tf.saved_model.load("exports/seg/1")
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg_bytes]))
    h, w = out["image_hw"][0]; out["class_map"][0, :h, :w]
"""

from __future__ import annotations

import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.data.detection import resize_and_pad_batch
from transfer_tf.data.segmentation import preprocess_segmentation_eval
from transfer_tf.export.saved_model import (
    TENSOR_INPUT,
    Untracked,
    add_image_signatures,
    image_signature_functions,
)
from transfer_tf.segmentation.model import class_map_at_original
from transfer_tf.segmentation.settings import IGNORE_LABEL, num_segmentation_classes

OUTPUTS = ("class_map", "image_hw", "class_scores", "class_pixel_fraction", "class_names")


def _read_names(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


class SegmentationServingModule(tf.Module):
    """The exported object: the model's variables plus the two serving functions.

    Args:
      model: `segmentation.model.build_segmenter`'s model.
      cfg: the run's config (segmentation section, export.max_image_pixels).
      labels_path: local text file, one class name per line in class-map order (an asset).
    """

    def __init__(self, model, cfg: ExperimentConfig, labels_path: str):
        super().__init__(name="segmenter_export")
        # As export.saved_model.ServingModule: only the raw variables are saved.
        self._model = Untracked(model)
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        self._size = int(cfg.segmentation.image_size)
        self._max_pixels = int(cfg.export.max_image_pixels)
        self._num_classes = num_segmentation_classes(cfg)
        self.labels_asset = tf.saved_model.Asset(labels_path)
        names = _read_names(labels_path)
        if len(names) != self._num_classes:
            raise ValueError(f"{len(names)} class names for {self._num_classes} classes")
        self._names = tf.constant(names)
        size = self._size
        add_image_signatures(self)
        # One traced copy of the model and post-processing shared by both signatures.
        self.segment = tf.function(
            self._segment,
            autograph=False,
            input_signature=[
                tf.TensorSpec([None, size, size, 3], tf.uint8, name=TENSOR_INPUT),
                tf.TensorSpec([None, 2], tf.int32, name="image_hw"),
            ],
        )

    def signatures(self) -> dict:
        """The concrete functions to save, keyed by signature name."""
        return image_signature_functions(self)

    def _segment(self, images, hw) -> dict[str, tf.Tensor]:
        logits = tf.cast(self._model.value(images, training=False), tf.float32)
        largest = tf.reduce_max(hw, axis=0)
        c = self._num_classes

        def one(args):
            classes, score = class_map_at_original(args[0], args[1], self._size)
            flat = tf.reshape(tf.cast(classes, tf.int32), [-1])
            count = tf.math.bincount(flat, minlength=c, maxlength=c, dtype=tf.float32)
            total = tf.math.unsorted_segment_sum(tf.reshape(score, [-1]), flat, c)
            pad = largest - tf.shape(classes)
            padded = tf.pad(classes, [[0, pad[0]], [0, pad[1]]], constant_values=IGNORE_LABEL)
            pixels = tf.cast(tf.size(flat), tf.float32)
            return padded, tf.math.divide_no_nan(total, count), count / pixels

        class_map, scores, fraction = tf.map_fn(
            one,
            (logits, hw),
            fn_output_signature=(
                tf.TensorSpec([None, None], tf.uint8),
                tf.TensorSpec([c], tf.float32),
                tf.TensorSpec([c], tf.float32),
            ),
        )
        return {
            "class_map": class_map,
            "image_hw": hw,
            "class_scores": scores,
            "class_pixel_fraction": fraction,
            "class_names": tf.tile(self._names[None], [tf.shape(hw)[0], 1]),
        }

    def _serve_bytes(self, image_bytes):
        # Images differ in size before the resize, so preprocessing is per element.
        images, hw = tf.map_fn(
            lambda b: preprocess_segmentation_eval(b, self._size, self._max_pixels),
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([self._size, self._size, 3], tf.uint8),
                tf.TensorSpec([2], tf.int32),
            ),
        )
        return self.segment(images, hw)

    def _serve_image_tensor(self, images):
        resized, _, hw = resize_and_pad_batch(images, self._size)
        return self.segment(resized, hw)
