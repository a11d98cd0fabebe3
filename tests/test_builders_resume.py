"""Resuming after a kill, and splitting a build across tasks: output identical to one clean run."""

from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import signal
import time

import pytest
import tensorflow as tf
from test_builders_rawdata import make_imagenet

from transfer_tf.data import schemas
from transfer_tf.data.builders import WriteOptions, build_imagenet
from transfer_tf.data.builders import classification as classification_module

WNIDS = ("n01440764", "n01443537", "n02102040")
SHARDS = {"train_shards": 4, "validation_shards": 2}


def shard_bytes(out: str) -> dict[str, bytes]:
    files = sorted(glob.glob(f"{out}/train-*") + glob.glob(f"{out}/validation-*"))
    return {os.path.basename(p): open(p, "rb").read() for p in files}


@pytest.fixture(scope="module")
def raw_and_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    raw = str(root / "raw")
    expected = make_imagenet(raw, WNIDS, per_class=4)
    ref = str(root / "reference")
    build_imagenet(raw, ref, **SHARDS)
    return raw, ref, expected


def test_rerun_redoes_partial_and_missing_shards_only(raw_and_reference, tmp_path):
    raw, ref, expected = raw_and_reference
    out = str(tmp_path / "out")
    build_imagenet(raw, out, **SHARDS)
    assert shard_bytes(out) == shard_bytes(ref)
    # Simulate a kill: one shard deleted, one truncated (its sidecar no longer matches), a
    # temporary partial file left behind.
    os.remove(f"{out}/train-00001-of-00004")
    with open(f"{out}/validation-00000-of-00002", "r+b") as f:
        f.truncate(100)
    with open(f"{out}/.build/tmp/train-00002-of-00004.tmp-999", "wb") as f:
        f.write(b"partial")
    kept = os.stat(f"{out}/train-00003-of-00004").st_mtime_ns
    build_imagenet(raw, out, **SHARDS)
    assert shard_bytes(out) == shard_bytes(ref)
    assert os.stat(f"{out}/train-00003-of-00004").st_mtime_ns == kept  # not rewritten
    assert not glob.glob(f"{out}/.build/tmp/*")
    assert open(f"{out}/manifest.json").read() == open(f"{ref}/manifest.json").read()


def _slow_build(raw: str, out: str) -> None:
    real = classification_module.prepare_image

    def slow(*args, **kwargs):
        time.sleep(0.15)
        return real(*args, **kwargs)

    classification_module.prepare_image = slow
    build_imagenet(raw, out, **SHARDS)


@pytest.mark.slow
def test_sigkill_mid_build_then_rerun_is_identical(raw_and_reference, tmp_path):
    raw, ref, expected = raw_and_reference
    out = str(tmp_path / "out")
    # A forked child (no second TensorFlow import) builds slowly; kill it once a shard is done.
    child = mp.get_context("fork").Process(target=_slow_build, args=(raw, out))
    child.start()
    deadline = time.monotonic() + 60
    while not glob.glob(f"{out}/.build/done/*.json") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    done = glob.glob(f"{out}/.build/done/*.json")
    assert 1 <= len(done) < 6, "the kill should land mid-build"
    assert not os.path.exists(f"{out}/manifest.json")
    build_imagenet(raw, out, **SHARDS)
    assert shard_bytes(out) == shard_bytes(ref)


def test_tasks_split_the_shards_and_cover_every_image_once(raw_and_reference, tmp_path):
    raw, ref, expected = raw_and_reference
    out = str(tmp_path / "out")
    for task in range(3):
        manifest = build_imagenet(
            raw, out, **SHARDS, options=WriteOptions(task_index=task, num_tasks=3)
        )
        partial = json.loads(open(f"{out}/manifest.task-{task:05d}-of-00003.json").read())
        assert not partial["complete"]
        # The last task to finish completes the manifest.
        assert (manifest is not None) == (task == 2)
    assert shard_bytes(out) == shard_bytes(ref)
    names = []
    for path in glob.glob(f"{out}/train-*") + glob.glob(f"{out}/validation-*"):
        for rec in tf.data.TFRecordDataset(path):
            ex = tf.train.Example.FromString(rec.numpy()).features.feature
            names.append(ex[schemas.FILENAME].bytes_list.value[0].decode())
    good = [os.path.basename(p) for p in expected["good"]]
    assert sorted(names) == sorted(good)
    full = json.loads(open(f"{out}/manifest.json").read())
    assert full == json.loads(open(f"{ref}/manifest.json").read())
