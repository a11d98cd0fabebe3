"""Serving at start-up speed (issue 33 item 6): the export's TF Serving warm-up requests parse as
PredictionLog records, one per signature, and each runs through its signature in stock
`tf.saved_model.load`; deploy/serving's models.config and batching parameters have the shapes TF
Serving reads."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import load_config
from transfer_tf.export import saved_model as sm
from transfer_tf.export import warmup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def _tiny_model():
    """Three classes on pooled pixels: an export's signatures without a ResNet's cost."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(pooled))


def test_without_tensorflow_serving_api_the_export_says_there_is_no_warmup(tmp_path, caplog):
    caplog.set_level("WARNING")
    missing = {"tensorflow_serving": None, "tensorflow_serving.apis": None}
    with pytest.MonkeyPatch.context() as patch:
        for name, module in missing.items():
            patch.setitem(sys.modules, name, module)
        assert warmup.write_warmup_requests(str(tmp_path), {}, "m", SIZE) is None
    assert "tensorflow-serving-api is not installed" in caplog.text
    assert not (tmp_path / "assets.extra").exists()


def test_warmup_requests_parse_and_run_through_each_signature(tmp_path):
    apis = pytest.importorskip(
        "tensorflow_serving.apis.prediction_log_pb2",
        reason="tensorflow-serving-api (a setup.py dependency) is not installed: make install",
    )
    cfg = load_config(None, ["data.num_classes=3", f"data.image_size={SIZE}", "export.top_k=2"])
    version_dir = sm.export_saved_model(_tiny_model(), cfg, str(tmp_path / "coco"))
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    logs = [apis.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == list(sm.SIGNATURES)
    assert {r.model_spec.name for r in requests} == {"coco"}
    loaded = tf.saved_model.load(version_dir)  # stock TensorFlow, no project code
    for request in requests:
        signature = loaded.signatures[request.model_spec.signature_name]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert set(inputs) == set(signature.structured_input_signature[1])
        out = signature(**inputs)
        assert out["probabilities"].shape == (1, 3) and out["top_k_classes"].shape == (1, 2)
        np.testing.assert_allclose(out["probabilities"].numpy().sum(), 1.0, rtol=1e-5)
    by_name = {r.model_spec.signature_name: r for r in requests}
    pixels = tf.make_ndarray(by_name["serving_image_tensor"].inputs[sm.TENSOR_INPUT])
    assert pixels.dtype == np.uint8 and pixels.shape == (1, SIZE, SIZE, 3)
    example = tf.train.Example.FromString(
        tf.make_ndarray(by_name["serve_examples"].inputs[sm.EXAMPLES_INPUT])[0]
    )
    jpeg = example.features.feature["image/encoded"].bytes_list.value[0]
    assert jpeg == tf.make_ndarray(by_name["serving_default"].inputs[sm.BYTES_INPUT])[0]


def _text_fields(path: str) -> list[str]:
    lines = [line.split("#")[0].strip() for line in open(path)]
    return [line for line in lines if line]


def test_the_serving_config_serves_the_classifier_and_the_detector_with_batching():
    config = os.path.join(REPO, "deploy", "serving", "models.config")
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        text_format = None
    if text_format is not None:  # the parser TF Serving itself uses
        parsed = text_format.Parse(open(config).read(), model_server_config_pb2.ModelServerConfig())
        models = {(c.name, c.base_path, c.model_platform) for c in parsed.model_config_list.config}
    else:  # without tensorflow-serving-api: the same fields, read by pattern
        text = " ".join(_text_fields(config))
        pattern = r'name: "([^"]+)" base_path: "([^"]+)" model_platform: "([^"]+)"'
        models = set(re.findall(pattern, text))
    assert models == {
        ("classifier", "/models/coco", "tensorflow"),
        ("detector", "/models/coco_detector", "tensorflow"),
    }
    batching = {}
    for line in _text_fields(os.path.join(REPO, "deploy", "serving", "batching_parameters.txt")):
        key, _, value = line.partition(" ")
        value = value.strip("{} :").removeprefix("value:").strip()
        batching.setdefault(key.rstrip(":"), []).append(value)
    known = {
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
    }
    assert set(batching) <= known, set(batching) - known
    allowed = [int(v) for v in batching["allowed_batch_sizes"]]
    # TF Serving's rule: increasing sizes, the last one equal to max_batch_size.
    assert allowed == sorted(allowed) and allowed[-1] == int(batching["max_batch_size"][0])
