"""The export and predict binaries end to end: run dir -> `export` -> `predict` (text and JSON)."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from binary_harness import run_cases
from PIL import Image

from transfer_tf import cli
from transfer_tf.config import load_config
from transfer_tf.data.augment import preprocess_for_eval
from transfer_tf.errors import UsageError
from transfer_tf.export.predict import Predictor, check_image_paths, format_text
from transfer_tf.models.resnet import build_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["red circle", "blue star", "green cross"]
pytestmark = pytest.mark.slow


def assert_one_line_usage_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    """A training-run directory (config.yaml + checkpoint) exported by the export binary."""
    root = tmp_path_factory.mktemp("predict")
    names = root / "names.txt"
    names.write_text("".join(f"{n}\n" for n in NAMES))
    cfg = load_config(
        None,
        [
            "model.name=resnet10",
            "data.image_size=32",
            "data.num_classes=3",
            f"data.label_names_file={names}",
        ],
    )
    model = build_classifier(cfg.model, cfg.data.num_classes)
    rng = np.random.default_rng(0)
    head = model.get_layer("head_dense")
    head.set_weights([rng.normal(0, 1.0, w.shape).astype(np.float32) for w in head.get_weights()])
    model_dir = root / "run"
    cli.write_resolved_config(cfg, str(model_dir))
    tf.train.Checkpoint(model=model).save(str(model_dir / "checkpoints" / "ckpt"))
    export_dir = root / "exports"
    # The export binary's usage error (a config that does not match the checkpoint) shares the
    # harness process with the real export.
    proc, mismatch = run_cases(
        "pipelines.export:run",
        [
            [f"--model_dir={model_dir}", f"--export_dir={export_dir}", "--set=export.top_k=2"],
            [
                f"--model_dir={model_dir}",
                f"--export_dir={root / 'rejected'}",
                "--set=model.name=resnet50",
            ],
        ],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(os.path.join(str(export_dir), "1"))
    images = []
    for i, fmt in enumerate(("JPEG", "PNG")):
        pixels = rng.integers(0, 256, (40 + 7 * i, 52, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt)
        path = root / f"img{i}.{fmt.lower()}"
        path.write_bytes(buf.getvalue())
        images.append(str(path))
    return model, export_dir, images, mismatch


def _expected(model, path):
    pixels = preprocess_for_eval(tf.io.read_file(path), 32)[None]
    return tf.nn.softmax(model(pixels, training=False))[0].numpy()


@pytest.fixture(scope="module")
def predict_runs(run_and_export, tmp_path_factory):
    """The predict binary on three command lines, in one harness process."""
    _, export_dir, images, _ = run_and_export
    text = tmp_path_factory.mktemp("notes") / "notes.jpg"
    text.write_text("not really a picture")
    json_run, non_image, no_images = run_cases(
        "pipelines.predict:run",
        [
            [f"--saved_model={export_dir}", "--json", *images],
            [f"--saved_model={export_dir}", images[0], str(text)],
            ["--saved_model=x"],
        ],
    )
    return {"json": json_run, "non_image": (non_image, text), "no_images": no_images}


def test_predict_json_on_base_dir_matches_restored_weights(run_and_export, predict_runs):
    model, export_dir, images, _ = run_and_export
    proc = predict_runs["json"]
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["saved_model"] == os.path.join(str(export_dir), "1")  # latest version picked
    assert [p["image"] for p in doc["predictions"]] == images
    for pred, path in zip(doc["predictions"], images, strict=True):
        probs = _expected(model, path)
        order = np.argsort(-probs)[:2]
        assert [t["index"] for t in pred["top_k"]] == order.tolist()
        assert [t["class"] for t in pred["top_k"]] == [NAMES[i] for i in order]
        np.testing.assert_allclose([t["score"] for t in pred["top_k"]], probs[order], atol=1e-5)


def test_predictor_on_version_dir_and_text_format(run_and_export):
    model, export_dir, images, _ = run_and_export
    predictor = Predictor(str(export_dir / "1"))
    assert predictor.version_dir == str(export_dir / "1")
    (pred,) = predictor.predict_files(images[:1], top_k=1)
    best = int(np.argmax(_expected(model, images[0])))
    assert pred.top_k[0][:2] == (best, NAMES[best])
    lines = format_text([pred]).splitlines()
    assert lines[0] == images[0]
    assert len(lines) == 2 and NAMES[best] in lines[1] and f"(class {best})" in lines[1]


def test_predictor_errors_name_the_file(run_and_export, tmp_path):
    _, export_dir, images, _ = run_and_export
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(UsageError, match="nope.jpg' does not exist"):
        check_image_paths([images[0], missing])
    with pytest.raises(UsageError, match="is a directory"):
        check_image_paths([str(tmp_path)])
    with pytest.raises(UsageError, match="--saved_model: directory .* does not exist"):
        Predictor(str(tmp_path / "none"))
    with pytest.raises(UsageError, match="neither saved_model.pb nor an integer version"):
        Predictor(str(tmp_path))


def test_predict_cli_non_image_is_one_line_error(predict_runs):
    proc, text = predict_runs["non_image"]
    assert_one_line_usage_error(proc, str(text), "not a decodable image")


def test_binaries_usage_errors(run_and_export, predict_runs):
    assert_one_line_usage_error(run_and_export[3], "model.name")
    assert_one_line_usage_error(predict_runs["no_images"], "no images")
