"""The segmentation SavedModel serves a JPEG through stock `tf.saved_model.load`: the class map
at the original image size with the class names, the same map as the evaluation's in-process
path (eval preprocessing + model + `Segmenter`), and `predict --draw_dir`'s colour overlay."""

import json
import os

import numpy as np
import tensorflow as tf

from transfer_tf.config import load_config
from transfer_tf.data.segmentation import preprocess_segmentation_eval
from transfer_tf.demo.inprocess import run_call
from transfer_tf.export.saved_model import export_saved_model
from transfer_tf.segmentation.evaluation import class_names
from transfer_tf.segmentation.export import OUTPUTS, SegmentationServingModule
from transfer_tf.segmentation.model import Segmenter, build_segmenter
from transfer_tf.segmentation.settings import num_segmentation_classes

H, W = 90, 50  # taller than the 64 px input: rows past 64 exist only at the original size


def test_export_serves_a_class_map_at_original_size(tmp_path):
    label_map = tmp_path / "label_map.json"
    label_map.write_text(json.dumps([{"id": 1, "name": "person"}, {"id": 7, "name": "train"}]))
    cfg = load_config(
        None,
        [
            "transfer.task=segmentation",
            "data.schema=coco",
            "data.num_classes=2",
            f"data.label_map_file={label_map}",
            "model.name=resnet10",
            "segmentation.image_size=64",
            "segmentation.fpn_channels=32",
            "segmentation.head_channels=32",
            "segmentation.max_eval_size=96",
        ],
    )
    model = build_segmenter(cfg.model, cfg.segmentation, num_segmentation_classes(cfg))
    # Untrained logits barely differ between classes: a bias makes the map non-trivial.
    model.get_layer("head_logits").bias.assign([0.0, 0.02, 0.0])
    version_dir = export_saved_model(
        model,
        cfg,
        str(tmp_path / "export"),
        module_factory=SegmentationServingModule,
        names=class_names(cfg),
    )
    image = np.random.default_rng(0).integers(0, 255, [H, W, 3], dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(image, quality=95).numpy()

    loaded = tf.saved_model.load(version_dir)  # stock TensorFlow, no project code
    serve = loaded.signatures["serving_default"]
    assert set(serve.structured_outputs) == set(OUTPUTS)
    out = {k: v.numpy() for k, v in serve(image_bytes=tf.constant([jpeg, jpeg])).items()}
    assert out["class_map"].shape == (2, H, W) and out["image_hw"].tolist() == [[H, W]] * 2
    assert out["class_names"][0].tolist() == [b"background", b"person", b"train"]
    assert np.isclose(out["class_pixel_fraction"][0].sum(), 1.0)
    present = out["class_pixel_fraction"][0] > 0
    assert np.all((out["class_scores"][0] > 0) == present)

    # The same map as the evaluation's path: eval preprocessing, model, Segmenter.
    resized, hw = preprocess_segmentation_eval(tf.constant(jpeg), 64)
    local = Segmenter(model, cfg.segmentation)({"images": resized[None], "image_hw": hw[None]})
    np.testing.assert_array_equal(out["class_map"][0], local.numpy()[0, :H, :W])
    assert (local.numpy()[0, H:] == 255).all()

    # Decoded tensors through serving_image_tensor give (nearly) the same map.
    tensor_out = loaded.signatures["serving_image_tensor"](images=tf.io.decode_jpeg(jpeg)[None])
    assert (tensor_out["class_map"].numpy()[0] == out["class_map"][0]).mean() > 0.99

    # predict's client side: classes present, and the overlay PNG at the image's size.
    path = tmp_path / "scene.jpg"
    path.write_bytes(jpeg)
    draw_dir = tmp_path / "drawn"
    printed = json.loads(
        run_call(
            "pipelines.predict",
            [f"--saved_model={version_dir}", f"--draw_dir={draw_dir}", "--json", str(path)],
        )
    )
    row = printed["segments"][0]
    assert {c["class"] for c in row["classes"]} <= {"background", "person", "train"}
    assert os.listdir(draw_dir) == ["scene.png"]  # no temporary file left behind
    assert tf.io.decode_png(tf.io.read_file(row["drawn"])).shape == (H, W, 3)
