"""TF Serving warm-up requests: the first real request is served at full speed.

TF Serving runs the records of `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`tensorflow.serving.PredictionLog`) through a model before it marks the model available, so
graph initialisation and kernel autotuning happen at load, not on a user's first request. The
export writes one PredictLog per signature, built from a generated image of the export's input
size (batch 1): encoded JPEG bytes for string inputs, a serialized tf.train.Example with
`image/encoded` for `examples`, uint8 pixels for image tensors.

The PredictionLog protos come from `tensorflow-serving-api` (installed with the pinned TensorFlow;
left out by `TRANSFER_TF_KEEP_TENSORFLOW=1`, as it requires tensorflow>=2.21): without it the
export writes no warm-up file and says so.

Example:
    path = write_warmup_requests(saved_model_dir, module.signatures(), "coco", image_size=224)
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from transfer_tf.data import schemas

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup_image(size: int) -> np.ndarray:
    """A deterministic uint8 `[size, size, 3]` image (gradients and a square: it decodes and
    crops like a photo, and a JPEG of it is not trivially small)."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack([*np.meshgrid(ramp, ramp[::-1]), np.full((size, size), 96.0)], axis=-1)
    image[size // 4 : size // 2, size // 4 : size // 2] = [200, 40, 40]
    return image.astype(np.uint8)


def _input_value(name: str, spec: tf.TensorSpec, image: np.ndarray, jpeg: bytes) -> np.ndarray:
    """A batch-1 value for one signature input, by its dtype and name."""
    if spec.dtype == tf.string:
        if "example" in name:
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        schemas.ENCODED: tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[jpeg])
                        )
                    }
                )
            )
            return np.array([example.SerializeToString()], dtype=object)
        return np.array([jpeg], dtype=object)
    if spec.dtype == tf.uint8 and spec.shape.rank == 4:
        return image[None]
    shape = [1 if d is None else d for d in spec.shape.as_list()]
    return np.zeros(shape, dtype=spec.dtype.as_numpy_dtype)


def signature_inputs(function) -> dict[str, tf.TensorSpec]:
    """`{input name: spec}` of a concrete function, as a SavedModel signature names them."""
    args, kwargs = function.structured_input_signature
    named = {spec.name: spec for spec in args if isinstance(spec, tf.TensorSpec)}
    named.update({k: v for k, v in kwargs.items() if isinstance(v, tf.TensorSpec)})
    return named


def write_warmup_requests(
    saved_model_dir: str, signatures: dict, model_name: str, image_size: int
) -> str | None:
    """Writes one PredictionLog per signature into `saved_model_dir/assets.extra/
    tf_serving_warmup_requests`; returns its path (None when tensorflow-serving-api is missing).
    """
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        logging.warning(
            "tensorflow-serving-api is not installed: no TF Serving warm-up requests in the "
            "export (pip install tensorflow-serving-api==2.21.0)"
        )
        return None
    image = warmup_image(image_size)
    jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, function in signatures.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for name, spec in signature_inputs(function).items():
                value = _input_value(name, spec, image, jpeg)
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=spec.dtype))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path
