"""The detection SavedModel serves a JPEG through stock `tf.saved_model.load`: boxes in the
original image's pixels, COCO category ids and names, the same detections as the in-process path
(the eval preprocessing + decoding), and `predict`'s drawing of them."""

import json
import os

import numpy as np
import tensorflow as tf

from transfer_tf.config import load_config
from transfer_tf.data.detection import preprocess_detection_eval
from transfer_tf.detection.evaluation import Detector, to_original_pixels
from transfer_tf.detection.export import OUTPUTS, DetectionServingModule
from transfer_tf.detection.retinanet import build_retinanet
from transfer_tf.export.saved_model import export_saved_model

H, W = 200, 100  # taller than the 128 px input: boxes past row 128 can only be original pixels


def _config(tmp_path):
    label_map = tmp_path / "label_map.json"
    label_map.write_text(
        json.dumps(
            [{"id": 1, "name": "person"}, {"id": 7, "name": "train"}, {"id": 22, "name": "x"}]
        )
    )
    return load_config(
        None,
        [
            "transfer.task=detection",
            "data.schema=coco",
            "data.num_classes=3",
            f"data.label_map_file={label_map}",
            "model.name=resnet18",
            "detection.image_size=128",
            "detection.head_convs=1",
            # An untrained detector scores ~0.01 (its prior): keep everything to have boxes.
            "detection.score_threshold=0.0",
            "detection.max_detections=20",
        ],
    )


def test_export_serves_a_jpeg_with_boxes_in_original_pixels(tmp_path):
    cfg = _config(tmp_path)
    model = build_retinanet(cfg.model, cfg.detection, cfg.data.num_classes)
    version_dir = export_saved_model(
        model, cfg, str(tmp_path / "export"), module_factory=DetectionServingModule
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, [H, W, 3], dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(image, quality=95).numpy()

    loaded = tf.saved_model.load(version_dir)  # stock TensorFlow, no project code
    serve = loaded.signatures["serving_default"]
    assert set(serve.structured_outputs) == set(OUTPUTS)
    out = {k: v.numpy() for k, v in serve(image_bytes=tf.constant([jpeg])).items()}
    n = int(out["num_detections"][0])
    assert n == 20
    boxes = out["detection_boxes"][0, :n]
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= H) and np.all(boxes[:, [1, 3]] <= W)
    assert boxes[:, 2].max() > 128  # original pixels, not the 128 px model input
    assert set(out["detection_classes"][0, :n]) <= {1, 7, 22}
    names = {1: b"person", 7: b"train", 22: b"x"}
    classes, class_names = out["detection_classes"][0, :n], out["detection_class_names"][0, :n]
    for cid, name in zip(classes, class_names, strict=True):
        assert names[int(cid)] == name

    # The same detections as the in-process path: eval preprocessing, model, decoding, mapping.
    resized, scale, hw = preprocess_detection_eval(tf.constant(jpeg), 128)
    local = Detector(model, cfg.detection)(resized[None])
    expected = to_original_pixels(local["boxes"].numpy()[0, :n], scale.numpy(), hw.numpy())
    np.testing.assert_allclose(boxes, expected, atol=0.05)
    np.testing.assert_allclose(out["detection_scores"][0, :n], local["scores"][0, :n], atol=1e-5)

    # Decoded tensors through serving_image_tensor give the same boxes.
    decoded = tf.io.decode_jpeg(jpeg)[None]
    tensor_out = loaded.signatures["serving_image_tensor"](images=decoded)
    np.testing.assert_allclose(tensor_out["detection_boxes"][0, :n], boxes, atol=0.05)

    # predict's client side prints and draws them.
    from transfer_tf.detection.predict import detect_files, draw_detections
    from transfer_tf.export.predict import Predictor

    path = tmp_path / "scene.jpg"
    path.write_bytes(jpeg)
    results = detect_files(Predictor(version_dir), [str(path)], min_score=0.0)
    assert len(results[0]["detections"]) == n
    drawn = draw_detections(str(path), results[0], str(tmp_path / "drawn" / "scene.png"))
    assert os.path.getsize(drawn) > 0
    assert tf.io.decode_png(tf.io.read_file(drawn)).shape == (H, W, 3)
