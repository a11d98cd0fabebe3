"""Data faults (issue 30): what a user sees when the disk, the shards, the JSON or an image is bad.

Each test reproduces the fault as it happens on a real machine (a file-size limit standing in for a
full disk, bytes overwritten in a shard, a COCO JSON with dangling ids, a huge JPEG) and checks the
one-line error or the counted, logged outcome. RELIABILITY_data.md lists the rows.
"""

from __future__ import annotations

import ctypes
import glob
import json
import logging
import os
import resource
import subprocess

import pytest
from binary_harness import run_cases
from test_builders_rawdata import make_coco, make_imagenet
from test_builders_resume import shard_bytes

from transfer_tf.data.builders import build_coco, build_imagenet

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


def test_builder_disk_full_removes_the_partial_shard_and_the_rerun_resumes(imagenet_raw, tmp_path):
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
    assert done == [f"train-{i:05d}-of-00006.json" for i in range(6)]
    kept = {p: os.stat(p).st_mtime_ns for p in glob.glob(f"{out}/train-*")}
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
    assert_one_line_error(imagenet, f"--output_dir {read_only}/imagenet is not writable")
    assert_one_line_error(coco, f"--output_file_prefix {read_only}/coco is not writable")
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
