"""SavedModel export: signatures, serving/eval equality, bad bytes, TF-only loading, versions."""

import io
import json
import logging as std_logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from binary_harness import run_cases
from PIL import Image

from transfer_tf.config import load_config
from transfer_tf.data import schemas
from transfer_tf.data.augment import center_crop_and_resize, preprocess_for_eval
from transfer_tf.errors import UsageError
from transfer_tf.export import saved_model as sm
from transfer_tf.models.resnet import build_classifier

SIZE = 32
pytestmark = pytest.mark.slow


def _image(seed, height, width):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(array, fmt):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _cfg(schema, num_classes, top_k, names_file=""):
    return load_config(
        None,
        [
            f"data.schema={schema}",
            f"data.num_classes={num_classes}",
            f"data.image_size={SIZE}",
            f"data.label_names_file={names_file}",
            f"export.top_k={top_k}",
            "model.name=resnet18",
        ],
    )


def _random_weights(model, seed):
    # A freshly built head is zero-ish; random weights make every class score differ.
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype(w.dtype) for w in model.get_weights()])
    # BN moving variances must stay positive.
    for layer in model.layers:
        if hasattr(layer, "moving_variance"):
            layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))


def _tiny_model():
    """Two classes on pooled pixels: an export's layout and logging without a ResNet's cost."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A single-label (with class names) and a multi-label export of tiny ResNet-18s."""
    root = tmp_path_factory.mktemp("exports")
    names_file = root / "names.txt"
    names_file.write_text("red circle\nblue star\ngreen cross\n")
    out = {}
    for kind, cfg in (
        ("single", _cfg("classification", 3, 2, str(names_file))),
        ("multi", _cfg("coco", 4, 10)),
    ):
        model = build_classifier(cfg.model, cfg.data.num_classes)
        _random_weights(model, seed=len(kind))
        path = sm.export_saved_model(model, cfg, str(root / kind))
        out[kind] = (model, cfg, path)
    return out


@pytest.fixture(scope="module")
def loaded_single(exports):
    """The single-label export loaded once (loading costs seconds; calls do not mutate it)."""
    return tf.saved_model.load(exports["single"][2])


@pytest.fixture(scope="module")
def jpeg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    path.write_bytes(_encode(_image(0, 48, 40), "JPEG"))
    return path


def test_layout_and_label_asset(exports):
    _, _, path = exports["single"]
    assert os.path.basename(path) == "1"
    assert sorted(os.listdir(os.path.dirname(path))) == ["1"]  # no temp dir left behind
    assets = os.path.join(path, "assets", sm.LABELS_ASSET)
    assert open(assets).read().splitlines() == ["red circle", "blue star", "green cross"]
    multi_assets = os.path.join(exports["multi"][2], "assets", sm.LABELS_ASSET)
    assert open(multi_assets).read().splitlines() == ["0", "1", "2", "3"]
    # What a later restore of this export as a backbone checks (issue 13 item 8).
    with open(os.path.join(path, "assets.extra", "model_signature.json")) as f:
        signature = json.load(f)
    assert signature["name"] == "resnet18" and signature["input_preprocessing"] == "standardize"


def test_serving_equals_pipeline_eval_path(exports, loaded_single):
    model, cfg, _ = exports["single"]
    loaded = loaded_single
    blobs = [
        _encode(_image(1, 50, 70), "JPEG"),
        _encode(_image(2, 64, 33), "PNG"),
        _encode(_image(3, 37, 37), "BMP"),
        _encode(_image(4, 40, 60), "GIF"),
    ]
    # The eval pipeline's preprocessing, fed to the Keras model directly.
    ds = tf.data.Dataset.from_tensor_slices(blobs).map(
        lambda b: preprocess_for_eval(b, cfg.data.image_size, cfg.data.eval_crop_fraction)
    )
    pixels = np.stack(list(ds.as_numpy_iterator()))
    want = model(pixels, training=False).numpy()
    got = loaded.signatures["serving_default"](image_bytes=tf.constant(blobs))
    # The SavedModel's graph may pick other conv kernels than the eager model (seen on AVX-512
    # CPUs: 1.1e-5 apart at logits ~1), so equal means float32 rounding apart; a preprocessing
    # skew as small as a different centre-crop fraction is orders of magnitude more (checked).
    tol = {"rtol": 1e-4, "atol": 1e-4}
    np.testing.assert_allclose(got["logits"].numpy(), want, **tol)
    skewed = tf.data.Dataset.from_tensor_slices(blobs).map(
        lambda b: preprocess_for_eval(b, cfg.data.image_size, 1.0)
    )
    skewed_logits = model(np.stack(list(skewed.as_numpy_iterator())), training=False).numpy()
    assert not np.allclose(skewed_logits, want, **tol)
    probs = got["probabilities"].numpy()
    np.testing.assert_allclose(probs, tf.nn.softmax(want).numpy(), **tol)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Top-k: best first, names from the asset.
    top = got["top_k_indices"].numpy()
    assert top.shape == (4, 2) and top.dtype == np.int32
    np.testing.assert_array_equal(top, np.argsort(-want, axis=1)[:, :2])
    names = np.array(["red circle", "blue star", "green cross"])
    np.testing.assert_array_equal(got["top_k_classes"].numpy().astype(str), names[top])
    np.testing.assert_allclose(
        got["top_k_scores"].numpy(), np.take_along_axis(probs, top, 1), atol=1e-6
    )

    # tf.train.Example signature: same result as the bytes it carries.
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    schemas.ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))
                }
            )
        ).SerializeToString()
        for b in blobs
    ]
    ex = loaded.signatures["serve_examples"](examples=tf.constant(examples))
    np.testing.assert_allclose(ex["logits"].numpy(), want, **tol)

    # Image-tensor signature: any size, same crop + resize as the eval path.
    image = _image(5, 45, 61)
    got_t = loaded.signatures["serving_image_tensor"](images=tf.constant(image[None]))
    want_t = model(center_crop_and_resize(image, SIZE, 0.875)[None], training=False).numpy()
    np.testing.assert_allclose(got_t["logits"].numpy(), want_t, **tol)


def test_multilabel_export_uses_sigmoid(exports):
    model, _, path = exports["multi"]
    loaded = tf.saved_model.load(path)
    image = _image(6, 40, 40)
    out = loaded.signatures["serving_image_tensor"](images=tf.constant(image[None]))
    logits = out["logits"].numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), 1 / (1 + np.exp(-logits)), atol=1e-6)
    assert abs(out["probabilities"].numpy().sum() - 1.0) > 1e-3  # not a softmax
    assert out["top_k_indices"].shape == (1, 4)  # top_k=10 clipped to num_classes
    assert out["top_k_classes"].numpy()[0, 0].decode() == str(out["top_k_indices"].numpy()[0, 0])


def test_bad_bytes_error_then_recovery(loaded_single, jpeg_file):
    serve = loaded_single.signatures["serving_default"]
    good = jpeg_file.read_bytes()
    for bad in (b"this is not an image", good[: len(good) // 3], b""):
        with pytest.raises(tf.errors.InvalidArgumentError):
            serve(image_bytes=tf.constant([good, bad]))
    out = serve(image_bytes=tf.constant([good]))
    assert out["probabilities"].shape == (1, 3)
    assert np.isfinite(out["probabilities"].numpy()).all()


def test_saved_model_cli_show_and_run(exports, jpeg_file, tmp_path):
    path = exports["single"][2]
    inputs = tmp_path / "in.npy"
    np.save(inputs, np.array([jpeg_file.read_bytes()], dtype=object))
    # The `saved_model_cli` console script's entry point, both commands in one process.
    show, run = run_cases(
        "tensorflow.python.tools.saved_model_cli:main",
        [
            ["show", "--dir", path, "--all"],
            [
                "run",
                "--dir",
                path,
                "--tag_set",
                "serve",
                "--signature_def",
                "serving_default",
                "--inputs",
                f"image_bytes={inputs}",
                "--outdir",
                str(tmp_path / "out"),
            ],
        ],
        cwd=str(tmp_path),
    )
    assert show.returncode == 0, show.stderr
    for name in sm.SIGNATURES:
        assert f"signature_def['{name}']" in show.stdout
    for key in ("image_bytes", "examples", "images", *sm.OUTPUTS):
        assert f"['{key}']" in show.stdout

    assert run.returncode == 0, run.stderr
    probs = np.load(tmp_path / "out" / "probabilities.npy")
    classes = np.load(tmp_path / "out" / "top_k_classes.npy", allow_pickle=True)
    assert probs.shape == (1, 3) and abs(probs.sum() - 1) < 1e-5
    assert classes[0, 0].decode() == ["red circle", "blue star", "green cross"][probs[0].argmax()]


def test_fresh_tensorflow_only_process_loads_and_predicts(exports, jpeg_file):
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        out = {}
        for path in sys.argv[2:]:
            serve = tf.saved_model.load(path).signatures["serving_default"]
            res = serve(image_bytes=tf.constant([open(sys.argv[1], "rb").read()]))
            out[path] = res["probabilities"].numpy().tolist()
        assert not [m for m in sys.modules if m.startswith(("transfer_tf", "pipelines"))]
        print(json.dumps(out))
        """
    )
    paths = [exports["single"][2], exports["multi"][2]]
    proc = subprocess.run(
        [sys.executable, "-c", script, str(jpeg_file), *paths],
        capture_output=True,
        text=True,
        cwd="/",  # the project is not importable from here
        env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # Same numbers as this process computes with the Keras models.
    for kind, path in zip(("single", "multi"), paths, strict=True):
        model, cfg, _ = exports[kind]
        pixels = preprocess_for_eval(jpeg_file.read_bytes(), SIZE)[None]
        logits = model(pixels, training=False)
        act = tf.nn.softmax if cfg.data.task == "single_label" else tf.sigmoid
        np.testing.assert_allclose(out[path], act(logits).numpy(), atol=1e-5)


def test_versions_are_sequential_and_failed_export_leaves_nothing(tmp_path, monkeypatch):
    cfg = _cfg("classification", 2, 5)
    model = _tiny_model()
    base = str(tmp_path / "exp")
    os.makedirs(os.path.join(base, "7"))
    os.makedirs(os.path.join(base, "notes"))
    assert sm.export_saved_model(model, cfg, base) == os.path.join(base, "8")
    with pytest.raises(UsageError, match="already exists"):
        sm.export_saved_model(model, cfg, base, version=8)

    def crash(obj, export_dir, **kwargs):
        os.makedirs(os.path.join(export_dir, "variables"))
        open(os.path.join(export_dir, "saved_model.pb"), "w").close()
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(RuntimeError):
        sm.export_saved_model(model, cfg, base)
    assert sorted(os.listdir(base)) == ["7", "8", "notes"]
    assert sm.existing_versions(base) == [7, 8]


def test_export_mutes_savedmodel_chatter_and_restores_the_log_levels(tmp_path, caplog):
    # It used to leave absl's logger at WARNING for the rest of a library caller's process
    # (absl.logging.set_verbosity restores the verbosity flag, WARNING outside a binary).
    from absl import logging as absl_logging

    caplog.set_level(std_logging.INFO)
    caplog.set_level(std_logging.INFO, logger="absl")
    levels = [std_logging.getLogger(n).level for n in ("absl", "tensorflow")]
    sm.export_saved_model(_tiny_model(), _cfg("classification", 2, 5), str(tmp_path / "exp"))
    assert "unsupported characters" not in caplog.text and "Assets written" not in caplog.text
    assert [std_logging.getLogger(n).level for n in ("absl", "tensorflow")] == levels
    absl_logging.info("the caller's own progress line")
    assert "the caller's own progress line" in caplog.text


def test_label_names_file_must_match_num_classes(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n\n")
    assert sm.label_names(_cfg("classification", 2, 1, str(names))) == ["a", "b"]
    with pytest.raises(UsageError, match="has 2 names, expected data.num_classes=3"):
        sm.label_names(_cfg("classification", 3, 1, str(names)))
    with pytest.raises(UsageError, match="does not exist"):
        sm.label_names(_cfg("classification", 3, 1, str(tmp_path / "missing.txt")))


def test_coco_export_names_come_from_the_label_map(tmp_path):
    # Issue 13 item 10: a COCO run without data.label_names_file exported "0".."K-1".
    label_map = tmp_path / "label_map.json"
    label_map.write_text(
        json.dumps(
            {
                "categories": [
                    {"id": 1, "name": "person", "index": 0},
                    {"id": 3, "name": "car", "index": 1},
                    {"id": 90, "name": "toothbrush", "index": 2},
                ]
            }
        )
    )
    cfg = _cfg("coco", 3, 1)
    cfg.data.label_map_file = str(label_map)
    assert sm.label_names(cfg) == ["person", "car", "toothbrush"]
    # A map without names falls back to the category ids (not the class indices).
    label_map.write_text(json.dumps({"1": 0, "3": 1, "90": 2}))
    assert sm.label_names(cfg) == ["1", "3", "90"]
    cfg.data.num_classes = 4
    with pytest.raises(UsageError, match="data.label_map_file.*3 categories.*num_classes=4"):
        sm.label_names(cfg)
    # An explicit names file still wins.
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    cfg.data.num_classes = 3
    cfg.data.label_names_file = str(names)
    assert sm.label_names(cfg) == ["a", "b", "c"]
