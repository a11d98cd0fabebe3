"""The tf.data pipeline on real TFRecord shards: shapes, labels, sharding, determinism, bad data."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from test_input_data import write_classification_shards, write_coco_shard

from transfer_tf import cli
from transfer_tf.config import DataConfig
from transfer_tf.data import input as input_lib
from transfer_tf.data.files import list_files
from transfer_tf.data.input import build_dataset, corrupt_data_error, skipped_records
from transfer_tf.errors import UsageError

SIZE = 32


def _cfg(pattern: str, num_classes: int = 5, **kw) -> DataConfig:
    return DataConfig(
        train_pattern=pattern,
        eval_pattern=pattern,
        num_classes=num_classes,
        image_size=SIZE,
        shuffle_buffer=8,
        **kw,
    )


def _labels(ds) -> list[int]:
    return [int(i) for _, y in ds for i in np.argmax(y.numpy(), axis=1)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("shards"))
    written = write_classification_shards(directory, num_shards=3, per_shard=5)
    return directory, written


def test_train_batches_have_contract_shapes_dtypes_and_ranges(shards):
    directory, _ = shards
    ds = build_dataset(_cfg(f"{directory}/train-*"), split="train", global_batch_size=4, seed=1)
    images, labels = next(iter(ds))
    assert images.dtype == tf.uint8 and images.shape == (4, SIZE, SIZE, 3)
    assert labels.dtype == tf.float32 and labels.shape == (4, 5)
    np.testing.assert_array_equal(labels.numpy().sum(axis=1), np.ones(4))
    assert set(np.unique(labels.numpy())) <= {0.0, 1.0}
    assert images.numpy().max() > images.numpy().min()  # real pixels, not padding


def test_eval_is_one_fixed_pass_with_offset_labels(shards):
    directory, written = shards
    cfg = _cfg(f"{directory}/train-*")
    ds = build_dataset(cfg, split="eval", global_batch_size=4)
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [len(x) for x, _ in batches] == [4, 4, 4, 3]  # short last batch
    assert sorted(int(i) for _, y in batches for i in y.argmax(1)) == sorted(
        label - 1 for _, _, label in written
    )
    again = [
        (x.numpy(), y.numpy()) for x, y in build_dataset(cfg, split="eval", global_batch_size=4)
    ]
    for (x1, y1), (x2, y2) in zip(batches, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_deterministic_train_runs_are_bitwise_reproducible(shards):
    directory, _ = shards
    cfg = _cfg(f"{directory}/train-*")

    def first(seed):
        ds = build_dataset(cfg, split="train", global_batch_size=5, seed=seed, deterministic=True)
        return [x.numpy() for x, _ in ds.take(3)]

    a, b, c = first(3), first(3), first(4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("num_shards", [4, 1])  # file sharding; per-record fallback
def test_two_workers_together_see_every_record_once_per_epoch(tmp_path, num_shards):
    per_shard = 12 // num_shards
    written = write_classification_shards(
        str(tmp_path), num_shards, per_shard, label_offset=0, unique_labels=True
    )
    expected = sorted(label for _, _, label in written)
    cfg = _cfg(f"{tmp_path}/train-*", num_classes=12, label_offset=0)
    seen = []
    for worker in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker)
        ds = build_dataset(cfg, split="train", global_batch_size=2, input_context=ctx, repeat=False)
        part = _labels(ds)
        assert len(part) == 6
        seen += part
    assert sorted(seen) == expected


def test_non_jpeg_and_minimal_records_decode_unless_jpeg_only(tmp_path):
    written = write_classification_shards(str(tmp_path), 1, 3, minimal=True, fmt="PNG")
    cfg = dataclasses.replace(_cfg(f"{tmp_path}/train-*"), jpeg_only=False)
    for split in ("train", "eval"):
        images, labels = next(iter(build_dataset(cfg, split=split, global_batch_size=3)))
        assert images.shape == (3, SIZE, SIZE, 3) and labels.shape == (3, 5)
    # Default: shards hold JPEG; a PNG record is bad data, named by the post-mortem.
    strict = dataclasses.replace(cfg, jpeg_only=True)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        next(iter(build_dataset(strict, split="train", global_batch_size=3)))
    error = str(corrupt_data_error(info.value))
    assert written[0][0] in error and "not a JPEG" in error and "record 0" in error


def _write_with_truncated_jpeg(directory: str) -> str:
    written = write_classification_shards(directory, 2, 3, seed=9)
    bad = written[-1][0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(bad)]
    example = tf.train.Example.FromString(records[1])
    data = example.features.feature["image/encoded"].bytes_list.value[0]
    example.features.feature["image/encoded"].bytes_list.value[0] = data[: len(data) // 3]
    records[1] = example.SerializeToString()
    with tf.io.TFRecordWriter(bad) as writer:
        for r in records:
            writer.write(r)
    return bad


def test_corrupt_image_stops_naming_the_shard_or_is_skipped_and_counted(tmp_path):
    bad = _write_with_truncated_jpeg(str(tmp_path))
    cfg = _cfg(f"{tmp_path}/train-*")
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _labels(build_dataset(cfg, split="eval", global_batch_size=2))
    error = corrupt_data_error(info.value)
    assert isinstance(error, UsageError)
    assert bad in str(error) and "record 1" in str(error) and "\n" not in str(error)

    before = skipped_records()
    skip_cfg = dataclasses.replace(cfg, on_corrupt_record="skip")
    assert len(_labels(build_dataset(skip_cfg, split="eval", global_batch_size=2))) == 5
    assert skipped_records() == before + 1


def test_train_failure_reaches_the_binary_as_one_line_naming_the_record(tmp_path, capsys):
    bad = _write_with_truncated_jpeg(str(tmp_path))
    cfg = _cfg(f"{tmp_path}/train-*")

    def main(argv):  # what a training binary's loop does with the train split
        ds = build_dataset(cfg, split="train", global_batch_size=2, repeat=False, seed=3)
        _labels(ds)

    with pytest.raises(SystemExit) as exit_info:
        cli._guarded(main)(["binary"])
    assert exit_info.value.code == cli.USAGE_EXIT_CODE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"error: transfer_tf corrupt data: cannot parse/decode record 1 of shard {bad} ("
    )


def test_bad_label_is_named_and_unrelated_errors_are_not_blamed_on_data(tmp_path):
    written = write_classification_shards(str(tmp_path), 2, 4, num_classes=5, label_offset=1)
    cfg = _cfg(f"{tmp_path}/train-*", label_offset=2)  # stored 1 -> class -1: out of range
    path, index, _ = next(w for w in written if w[2] == 1)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _labels(build_dataset(cfg, split="eval", global_batch_size=4))
    message = str(corrupt_data_error(info.value))
    assert f"record {index} of shard {path} (" in message and "label_offset(2)" in message
    assert corrupt_data_error(tf.errors.InvalidArgumentError(None, None, "shapes differ")) is None


def test_truncated_shard_file_is_reported_by_name(tmp_path):
    written = write_classification_shards(str(tmp_path), 2, 3, seed=2)
    bad = written[0][0]
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[:-40])  # cuts into the last record's framing
    cfg = _cfg(f"{tmp_path}/train-*")
    with pytest.raises(tf.errors.DataLossError) as info:
        _labels(build_dataset(cfg, split="eval", global_batch_size=2))
    error = corrupt_data_error(info.value)
    assert isinstance(error, UsageError) and "\n" not in str(error)
    assert bad in str(error) and "truncated or corrupt TFRecord framing at record 2 of" in str(
        error
    )
    skip_cfg = dataclasses.replace(cfg, on_corrupt_record="skip")
    assert len(_labels(build_dataset(skip_cfg, split="eval", global_batch_size=2))) == 5


def test_coco_labels_are_multi_hot_and_boxes_keep_them_honest(tmp_path):
    whole = [[0.0, 0.0, 1.0, 1.0]]
    examples = [
        {"size": (48, 64), "boxes": whole + [[0.1, 0.1, 0.5, 0.5]], "ids": [90, 3]},
        {"size": (56, 40), "boxes": whole, "ids": [1]},
        {"size": (40, 40), "boxes": [], "ids": []},  # images without objects are kept
    ]
    _, label_map = write_coco_shard(str(tmp_path), examples)
    cfg = _cfg(f"{tmp_path}/coco-*", num_classes=4, schema="coco", label_map_file=label_map)
    _, labels = next(iter(build_dataset(cfg, split="eval", global_batch_size=3)))
    # label map: 1 -> 0, 3 -> 1, 7 -> 2, 90 -> 3
    np.testing.assert_array_equal(labels.numpy(), [[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    eval_rows = {tuple(row) for row in labels.numpy()}
    # Default rule (min_object_covered=0.5): a crop keeps a subset of its image's labels.
    train = build_dataset(cfg, split="train", global_batch_size=3, deterministic=True)
    for images, labels in train.take(3):
        assert images.shape == (3, SIZE, SIZE, 3)
        for row in labels.numpy():
            assert any(np.all(row <= np.array(full)) for full in eval_rows), row
    # With the threshold at 0 every object counts as inside every crop: labels equal eval's.
    keep_all = dataclasses.replace(cfg, min_object_covered=0.0)
    one_epoch = build_dataset(keep_all, split="train", global_batch_size=3, repeat=False)
    _, labels = next(iter(one_epoch))
    assert {tuple(row) for row in labels.numpy()} == eval_rows


def test_mixup_and_cutmix_give_soft_labels(shards):
    directory, _ = shards
    cfg = _cfg(f"{directory}/train-*", mixup_alpha=0.4, cutmix_alpha=1.0)
    for images, labels in build_dataset(cfg, split="train", global_batch_size=4).take(3):
        assert images.dtype == tf.uint8
        np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert labels.numpy().max() <= 1.0


def test_bad_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="matches no files"):
        build_dataset(_cfg(f"{tmp_path}/none-*"), split="train", global_batch_size=2)
    with pytest.raises(UsageError, match="split"):
        build_dataset(_cfg("x"), split="test", global_batch_size=2)
    with pytest.raises(UsageError, match="label_map_file"):
        write_coco_shard(str(tmp_path), [{"size": (40, 40), "boxes": [], "ids": []}])
        build_dataset(_cfg(f"{tmp_path}/coco-*", schema="coco"), split="eval", global_batch_size=2)


def test_list_files_accepts_comma_separated_patterns(shards):
    directory, _ = shards
    files = list_files(f"{directory}/train-00000*, {directory}/train-0000[12]*")
    assert [os.path.basename(f) for f in files] == [f"train-{i:05d}-of-00003" for i in range(3)]


def test_fixed_parallelism_by_default_autotune_on_request(shards):
    directory, _ = shards
    cfg = _cfg(f"{directory}/train-*")
    assert input_lib.parallelism(cfg) == len(os.sched_getaffinity(0)) + 1
    assert input_lib.parallelism(dataclasses.replace(cfg, num_parallel_calls=5)) == 5
    tuned = dataclasses.replace(cfg, num_parallel_calls=-1)
    assert input_lib.parallelism(tuned) == tf.data.AUTOTUNE
    fixed_ds = build_dataset(cfg, split="train", global_batch_size=4)
    tuned_ds = build_dataset(tuned, split="train", global_batch_size=4)
    assert fixed_ds.options().autotune.enabled is False
    assert tuned_ds.options().autotune.enabled is True
    for ds in (fixed_ds, tuned_ds):
        images, _ = next(iter(ds))
        assert images.shape == (4, SIZE, SIZE, 3)


def _stream(cfg, start_step=0, take=6, batch=4, **kw):
    if start_step:
        kw["start_step"] = start_step
    ds = build_dataset(cfg, split="train", global_batch_size=batch, seed=7, **kw)
    return [(x.numpy(), y.numpy().argmax(1)) for x, y in ds.take(take)]


@pytest.fixture(scope="module")
def id_shards(tmp_path_factory):
    """12 records in 3 shards; label = record id."""
    directory = str(tmp_path_factory.mktemp("ids"))
    write_classification_shards(directory, 3, 4, label_offset=0, unique_labels=True)
    return _cfg(f"{directory}/train-*", num_classes=12, label_offset=0, cycle_length=2)


def test_stream_started_at_a_step_is_the_uninterrupted_stream_from_there(id_shards):
    # 12 records, batches of 4: step 5 is 2 records... epoch 1, record 8 of the stream's epoch.
    whole = _stream(id_shards, take=9, deterministic=True)
    for start in (2, 5):
        resumed = _stream(id_shards, start_step=start, take=9 - start, deterministic=True)
        for (x1, y1), (x2, y2) in zip(whole[start:], resumed, strict=True):
            np.testing.assert_array_equal(y1, y2)
            np.testing.assert_array_equal(x1, x2)  # same crops and flips
    # Two input pipelines: each resumes at its own share of the step (2 records per step).
    for worker in range(2):
        ctx = tf.distribute.InputContext(2, worker, num_replicas_in_sync=2)
        whole = _stream(id_shards, take=7, deterministic=True, input_context=ctx)
        resumed = _stream(id_shards, 4, take=3, deterministic=True, input_context=ctx)
        for (x1, y1), (x2, y2) in zip(whole[4:], resumed, strict=True):
            np.testing.assert_array_equal(y1, y2)
            np.testing.assert_array_equal(x1, x2)


def test_non_deterministic_stream_resumes_in_its_epoch_without_replaying_epoch_0(id_shards):
    # Step 4 = record 16 = epoch 1, 4 records in: 8 more of epoch 1, then all 12 of epoch 2.
    # (One map call: a sloppy parallel map could let a record of epoch 2 overtake one of epoch 1
    # in the output; the reads inside an epoch stay out of order.)
    one_call = dataclasses.replace(id_shards, num_parallel_calls=1)
    ids = np.concatenate([y for _, y in _stream(one_call, start_step=4, take=5)])
    assert len(set(ids[:8])) == 8 and sorted(ids[8:20]) == list(range(12))
    # The epoch's shuffle depends on the epoch: epochs 1 and 2 are not the same order.
    epochs = _stream(id_shards, take=6, deterministic=True)
    order = np.concatenate([y for _, y in epochs])
    assert not np.array_equal(order[12:24], order[:12])


def test_skip_mode_keeps_every_crop_on_clean_data(id_shards):
    strict = _stream(id_shards, take=4, deterministic=True)
    skipping = _stream(
        dataclasses.replace(id_shards, on_corrupt_record="skip"), take=4, deterministic=True
    )
    for (x1, y1), (x2, y2) in zip(strict, skipping, strict=True):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)


def _constants(ds: tf.data.Dataset) -> set[int]:
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {
        int(v)
        for n in nodes
        if n.op == "Const" and n.attr["dtype"].type == tf.int64.as_datatype_enum
        for v in tf.make_ndarray(n.attr["value"].tensor).ravel()[:1]
    }


def test_remote_patterns_get_big_read_buffers_and_autotune(shards):
    directory, _ = shards
    remote = "ram://transfer_tf_remote_test"
    tf.io.gfile.makedirs(remote)
    for path in tf.io.gfile.glob(f"{directory}/train-*"):
        tf.io.gfile.copy(path, f"{remote}/{os.path.basename(path)}", overwrite=True)
    local_cfg = _cfg(f"{directory}/train-*")
    remote_cfg = _cfg(f"{remote}/train-*")
    assert input_lib.is_remote("gs://b/train-*") and input_lib.is_remote(f"x,{remote}/a")
    assert not input_lib.is_remote(f"{directory}/train-*,file:///tmp/x")
    assert input_lib.parallelism(remote_cfg) == tf.data.AUTOTUNE
    assert input_lib.parallelism(dataclasses.replace(remote_cfg, num_parallel_calls=3)) == 3
    for policy in ("error", "skip"):
        local = build_dataset(
            dataclasses.replace(local_cfg, on_corrupt_record=policy),
            split="train",
            global_batch_size=4,
        )
        ds = build_dataset(
            dataclasses.replace(remote_cfg, on_corrupt_record=policy),
            split="train",
            global_batch_size=4,
        )
        assert ds.options().autotune.enabled and not local.options().autotune.enabled
        assert input_lib.REMOTE_READ_BUFFER in _constants(ds)
        assert input_lib.REMOTE_READ_BUFFER not in _constants(local)
        images, _ = next(iter(ds))
        assert images.shape == (4, SIZE, SIZE, 3)
