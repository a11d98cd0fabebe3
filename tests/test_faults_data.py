"""Data faults (issue 30): what a user sees when the disk, the shards, the JSON or an image is bad.

Each test reproduces the fault as it happens on a real machine (a file-size limit standing in for a
full disk, bytes overwritten in a shard, a COCO JSON with dangling ids, a huge JPEG) and checks the
one-line error or the counted, logged outcome. RELIABILITY_data.md lists the rows.
"""

from __future__ import annotations

import ctypes
import glob
import io
import json
import logging
import os
import resource
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from binary_harness import run_cases
from PIL import Image
from test_builders_rawdata import make_coco, make_imagenet
from test_builders_resume import shard_bytes

from transfer_tf.config import ConfigError, DataConfig, load_config
from transfer_tf.data.augment import preprocess_for_eval
from transfer_tf.data.builders import build_coco, build_imagenet
from transfer_tf.data.image_limits import header_hw, pixel_limit_error
from transfer_tf.data.input import build_dataset, skipped_records
from transfer_tf.export.saved_model import export_saved_model

WNIDS = ("n01440764", "n01443537", "n02102040")
# Small train shards, one big validation shard: a file-size limit between the two lets the train
# shards finish and stops the build in the validation shard.
SHARDS = {"train_shards": 6, "validation_shards": 1}
PR_CAPBSET_DROP = 24  # linux/prctl.h


def error_lines(proc) -> list[str]:
    """The `error: ...` lines of a binary's stderr (TensorFlow's start-up notices may precede)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = error_lines(proc)
    for needle in needles:
        assert needle in line, line
    return line


# -- item 3: builders on a full disk / a read-only output folder -------------------------------


@pytest.fixture(scope="module")
def imagenet_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults_raw")
    raw = str(root / "raw")
    make_imagenet(raw, WNIDS, per_class=4, val_per_class=6)
    reference = str(root / "reference")
    build_imagenet(raw, reference, **SHARDS)
    return raw, reference


def _limit_file_size(limit: int):
    def apply() -> None:  # in the child, before exec: Python ignores SIGXFSZ, writes get EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("workers", [1, 2])  # in-process; forkserver workers (pool cleanup)
def test_builder_disk_full_removes_the_partial_shard_and_the_rerun_resumes(
    imagenet_raw, tmp_path, workers
):
    raw, reference = imagenet_raw
    sizes = {name: len(data) for name, data in shard_bytes(reference).items()}
    biggest_train = max(n for name, n in sizes.items() if name.startswith("train-"))
    limit = biggest_train + 4096
    assert sizes["validation-00000-of-00001"] > limit + 4096  # the fault lands in that shard
    out = str(tmp_path / "out")
    (proc,) = run_cases(
        "pipelines.make_imagenet_tfrecords:run",
        [
            [
                f"--raw_data_dir={raw}",
                f"--output_dir={out}",
                *(f"--{k}={v}" for k, v in SHARDS.items()),
                f"--num_workers={workers}",
            ]
        ],
        preexec_fn=_limit_file_size(limit),
    )
    line = assert_one_line_error(proc, "validation-00000-of-00001", "File too large")
    assert line.startswith("error: cannot write ")
    # Nothing partial is left, and nothing looks complete: no validation shard, no manifest.
    assert glob.glob(f"{out}/.build/tmp/*") == []
    assert not glob.glob(f"{out}/validation-*") and not os.path.exists(f"{out}/manifest.json")
    done = sorted(os.listdir(f"{out}/.build/done"))
    train_done = [f"train-{i:05d}-of-00006.json" for i in range(6)]
    # One worker finished every train shard first; with two, the other one may have been
    # stopped mid-shard (its partial file is gone too, checked above).
    assert done == train_done if workers == 1 else set(done) <= set(train_done)
    finished = [f"{out}/{name[: -len('.json')]}" for name in done]
    if workers == 1:
        assert sorted(glob.glob(f"{out}/train-*")) == finished
    else:
        # A worker stopped between its shard's rename and its sidecar leaves a file without a
        # sidecar, which by design (sharded_writer) the rerun redoes; every sidecar has its file.
        assert set(finished) <= set(glob.glob(f"{out}/train-*"))
    kept = {p: os.stat(p).st_mtime_ns for p in finished}
    # The rerun (space freed) keeps the finished shards and writes the rest: a clean build.
    build_imagenet(raw, out, **SHARDS)
    assert shard_bytes(out) == shard_bytes(reference)
    assert {p: os.stat(p).st_mtime_ns for p in kept} == kept
    assert open(f"{out}/manifest.json").read() == open(f"{reference}/manifest.json").read()


def _without_root_override() -> None:
    """In the child, before exec: root writes through any mode bits (CAP_DAC_OVERRIDE); drop
    that capability (and CAP_DAC_READ_SEARCH) from the bounding set so a mode of 0o555 holds."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_builder_read_only_output_dir_fails_before_reading_input(tmp_path):
    raw = str(tmp_path / "raw")
    make_imagenet(raw, WNIDS, per_class=1, val_per_class=1)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    coco_json = tmp_path / "instances.json"
    coco_json.write_text("{not json")  # the COCO builder must not get as far as parsing it
    cases = {
        "make_imagenet_tfrecords": [f"--raw_data_dir={raw}", f"--output_dir={read_only}/imagenet"],
        "make_coco_tfrecords": [
            f"--image_dir={raw}",
            f"--object_annotations_file={coco_json}",
            f"--output_file_prefix={read_only}/coco/train",
        ],
    }
    try:
        imagenet, coco = (
            run_cases(f"pipelines.{binary}:run", [args], preexec_fn=_without_root_override)[0]
            for binary, args in cases.items()
        )
    except subprocess.SubprocessError:
        pytest.skip("cannot drop root's override of file modes here")
    finally:
        read_only.chmod(0o755)
    assert_one_line_error(imagenet, f"--output_dir: cannot write to '{read_only}/imagenet'")
    assert_one_line_error(coco, f"--output_file_prefix: cannot write to '{read_only}/coco'")
    assert os.listdir(read_only) == []


# -- item 6: COCO annotations that point at no image / no category -------------------------------


def _coco_with_dangling_ids(root) -> tuple[str, str]:
    """make_coco's dump plus annotations naming image ids and category ids the JSON lacks."""
    src = make_coco(str(root), with_masks=False)
    data = src["json"]
    box = {"bbox": [1.0, 1.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0}
    data["annotations"] += [
        {"id": 9001, "image_id": 777777, "category_id": 1, **box},
        {"id": 9002, "image_id": 888888, "category_id": 18, **box},
        {"id": 9003, "image_id": 1000, "category_id": 55, **box},
    ]
    path = os.path.join(str(root), "instances.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return os.path.join(str(root), "images"), path


def test_coco_dangling_ids_are_counted_logged_and_refused_with_strict(tmp_path, caplog):
    images, annotations = _coco_with_dangling_ids(tmp_path / "coco")
    with caplog.at_level(logging.WARNING):
        manifest_path = build_coco([images], annotations, str(tmp_path / "out" / "train"))
    planning = json.loads(open(manifest_path).read())["planning"]
    assert planning["annotations_with_unknown_image"] == 2
    assert planning["annotations_with_unknown_category"] == 1
    logged = caplog.text
    assert "2 annotation(s)" in logged and "777777" in logged and "888888" in logged
    assert "9001" in logged and "category_id 55" in logged

    (strict,) = run_cases(
        "pipelines.make_coco_tfrecords:run",
        [
            [
                f"--image_dir={images}",
                f"--object_annotations_file={annotations}",
                f"--output_file_prefix={tmp_path}/strict/train",
                "--strict",
            ]
        ],
    )
    assert_one_line_error(
        strict, "--strict", annotations, "image_id 777777", "category_id 55", "2 annotation(s)"
    )
    assert not glob.glob(f"{tmp_path}/strict/*")  # refused before any shard was written


# -- item 7: huge images at the serving signatures and predict -----------------------------------

SERVE_SIZE = 32
SMALL_LIMIT = 10_000  # pixels: 120 x 90 is above, 100 x 90 below


def _encoded(fmt: str, height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    out = io.BytesIO()
    small.resize((width, height), Image.BILINEAR).save(out, fmt)
    return out.getvalue()


def _jpeg_claiming(height: int, width: int) -> bytes:
    """A small JPEG whose frame header claims `height` x `width` (its data cannot fill that:
    decoding it would fail, so refusing it shows the size was read from the header first)."""
    data = bytearray(_encoded("JPEG", 16, 16))
    sof = data.index(b"\xff\xc0")  # baseline frame header: FF C0, length, precision, H, W
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    """A tiny classifier exported twice: with the default pixel limit and with SMALL_LIMIT."""
    root = tmp_path_factory.mktemp("serving_limits")
    inputs = keras.Input((SERVE_SIZE, SERVE_SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="glorot_uniform")(pooled))
    base = [f"data.image_size={SERVE_SIZE}", "data.num_classes=3", "export.top_k=2"]
    default = export_saved_model(model, load_config(None, base), str(root / "default"))
    limited = export_saved_model(
        model,
        load_config(None, [*base, f"export.max_image_pixels={SMALL_LIMIT}"]),
        str(root / "limited"),
    )
    return model, default, limited


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP"])
def test_header_sizes_are_the_decoded_sizes(fmt):
    data = _encoded(fmt, 37, 53)
    assert tuple(header_hw(tf.constant(data)).numpy()) == (37, 53)
    assert tuple(tf.io.decode_image(data, expand_animations=False).shape[:2]) == (37, 53)


def test_serving_refuses_images_above_the_pixel_limit_before_decoding(tiny_exports):
    _, default, limited = tiny_exports
    serve = tf.saved_model.load(limited).signatures["serving_default"]
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        out = serve(image_bytes=tf.constant([_encoded(fmt, 90, 100)]))  # 9,000 pixels
        assert out["probabilities"].shape == (1, 3)
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            serve(image_bytes=tf.constant([_encoded(fmt, 90, 120)]))  # 10,800 pixels
        assert pixel_limit_error(info.value.message) == (
            f"is 120x90 pixels (width x height), above the limit of {SMALL_LIMIT} pixels "
            "(export.max_image_pixels)"
        ), fmt
    loaded = tf.saved_model.load(limited)
    with pytest.raises(tf.errors.InvalidArgumentError, match="export.max_image_pixels"):
        loaded.signatures["serving_image_tensor"](images=tf.zeros([1, 90, 120, 3], tf.uint8))
    # The default limit, from the header of a JPEG that could not even be decoded.
    huge = tf.constant([_jpeg_claiming(10_000, 10_000)])
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        tf.saved_model.load(default).signatures["serving_default"](image_bytes=huge)
    assert "is 10000x10000 pixels" in pixel_limit_error(info.value.message)


def test_predict_names_an_image_above_the_limit_in_one_line(tiny_exports, tmp_path):
    _, default, _ = tiny_exports
    fine, huge = tmp_path / "fine.png", tmp_path / "huge.jpg"
    fine.write_bytes(_encoded("PNG", 40, 50))
    huge.write_bytes(_jpeg_claiming(10_000, 10_000))
    (proc,) = run_cases(
        "pipelines.predict:run", [[f"--saved_model={default}", str(fine), str(huge)]]
    )
    line = assert_one_line_error(proc)
    assert line == (
        f"error: image '{huge}' is 10000x10000 pixels (width x height), above the limit of "
        "89478485 pixels (export.max_image_pixels)"
    )


_PEAK_CHILD = r"""
import json, resource, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
small, big = (tf.constant([open(p, "rb").read()]) for p in sys.argv[2:4])
serve(image_bytes=small)  # warm up: trace caches, thread pools
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
logits = serve(image_bytes=big)["logits"].numpy()
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grown_mb": grown / 1024, "logits": logits.tolist()}))
"""


def test_serving_decodes_a_large_jpeg_downscaled(tiny_exports, tmp_path):
    model, default, _ = tiny_exports
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    big.write_bytes(_encoded("JPEG", 6_000, 6_000, seed=3))  # 36 megapixels, below the limit
    small.write_bytes(_encoded("JPEG", 64, 64))
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, default, str(small), str(big)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # A full decode of the 5,250 px crop is 83 MB of uint8 and 330 MB as float for the resize;
    # decoded at 1/8 scale the crop is 656 px: ~6 MB.
    assert result["grown_mb"] < 100, result["grown_mb"]
    # Still the eval pipeline's function: the same pixels, the same logits.
    pixels = preprocess_for_eval(tf.constant(big.read_bytes()), SERVE_SIZE)[None]
    want = model(tf.cast(pixels, tf.float32), training=False).numpy()
    np.testing.assert_allclose(result["logits"], want, rtol=1e-4, atol=1e-4)


# -- item 5: bytes overwritten in the middle of a training shard ---------------------------------


def _record_starts(path: str) -> list[int]:
    """Byte offset of each record of a TFRecord file (u64 length, u32 CRC, data, u32 CRC)."""
    data, starts, pos = open(path, "rb").read(), [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 16 + int.from_bytes(data[pos : pos + 8], "little")
    return starts


def _overwrite_mid_shard(path: str) -> tuple[int, int, int]:
    """Overwrites 8 bytes inside the middle record's data (as a bad disk sector would); returns
    (that record's index, its byte offset, the number of records from it to the end)."""
    starts = _record_starts(path)
    index = len(starts) // 2
    with open(path, "r+b") as f:
        f.seek(starts[index] + 12 + 20)  # past the header, inside the serialized Example
        f.write(b"\xa5" * 8)
    return index, starts[index], len(starts) - index


@pytest.fixture(scope="module")
def corrupt_build(tmp_path_factory):
    """Builder shards (with their manifest) of which one train shard has bytes overwritten."""
    root = tmp_path_factory.mktemp("corrupt_build")
    raw, out = str(root / "raw"), str(root / "shards")
    make_imagenet(raw, WNIDS, per_class=4, val_per_class=1)
    build_imagenet(raw, out, train_shards=3, validation_shards=1)
    bad = f"{out}/train-00001-of-00003"
    index, offset, lost = _overwrite_mid_shard(bad)
    return out, bad, index, offset, lost


def test_overwritten_bytes_stop_training_with_one_line_naming_shard_record_and_offset(
    corrupt_build, tmp_path
):
    out, bad, index, offset, _ = corrupt_build
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""
seed: 1
deterministic: true
data:
  train_pattern: {out}/train-*
  num_classes: 3
  image_size: 32
  shuffle_buffer: 8
  cycle_length: 2
model:
  name: resnet10
train:
  global_batch_size: 4
  train_steps: 12
  strategy: one_device
  checkpoint_every_steps: 100
  log_every_steps: 100
"""
    )
    (proc,) = run_cases(
        "pipelines.pretrain:run", [[f"--config={config}", f"--model_dir={tmp_path / 'run'}"]]
    )
    size = os.path.getsize(bad)
    line = assert_one_line_error(proc)
    assert line.startswith(
        f"error: transfer_tf corrupt data: truncated or corrupt TFRecord framing at record "
        f"{index} of shard {bad} (byte offset {offset} of {size};"
    ), line
    assert "data.on_corrupt_record=skip" in line


def _data_cfg(out: str, **kw) -> DataConfig:
    return DataConfig(
        train_pattern=f"{out}/train-*",
        eval_pattern=f"{out}/train-*",
        num_classes=3,
        image_size=16,
        shuffle_buffer=4,
        **kw,
    )


def test_skip_policy_counts_the_lost_records_and_logs_them_per_shard_each_epoch(
    corrupt_build, caplog
):
    out, bad, index, offset, lost = corrupt_build
    manifest = json.loads(open(f"{out}/manifest.json").read())
    total = manifest["splits"]["train"]["records"]
    name = os.path.basename(bad)
    cfg = _data_cfg(out, on_corrupt_record="skip")
    before = skipped_records()
    with caplog.at_level(logging.INFO):
        # One eval pass: every readable record once, the lost ones counted, not silently gone.
        seen = sum(len(x) for x, _ in build_dataset(cfg, split="eval", global_batch_size=4))
        assert seen == total - lost
        assert skipped_records() == before + lost
        # Training epochs: each epoch's end logs its count per shard.
        train = build_dataset(cfg, split="train", global_batch_size=2, deterministic=True)
        per_epoch = total - lost
        for _ in train.take((2 * per_epoch + 2) // 2 + 1):
            pass
    # The pipeline reads ahead (whole epochs of these tiny shards): each epoch read loses `lost`.
    grown = skipped_records() - before
    assert grown >= 3 * lost and grown % lost == 0
    summaries = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any(
        f"record {index} of shard {bad}" in m and f"byte offset {offset}" in m for m in summaries
    ), summaries
    for epoch in (0, 1):
        want = (
            f"input epoch {epoch} of {out}/train-*: skipped {lost} of {total} records as corrupt "
            f"(data.on_corrupt_record=skip): {name}: {lost}"
        )
        assert any(m.startswith(want) for m in summaries), (want, summaries)


def test_on_corrupt_record_is_a_checked_choice_and_replaces_skip_corrupt(tmp_path):
    assert load_config(None).data.on_corrupt_record == "error"
    with pytest.raises(ConfigError, match="data.on_corrupt_record.*'error', 'skip'"):
        load_config(None, ["data.on_corrupt_record=ignore"])
    # Run dirs written before the rename hold `skip_corrupt`: they still load (and resume).
    old = tmp_path / "config.yaml"
    old.write_text("data:\n  skip_corrupt: true\n")
    assert load_config(str(old)).data.on_corrupt_record == "skip"
    with pytest.raises(ConfigError, match="data.on_corrupt_record"):
        load_config(None, ["data.skip_corrupt=true"])
