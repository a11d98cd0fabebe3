"""The train/eval record stream of the input pipeline: epochs, file order, shuffle, position.

A stream is a sequence of epochs. Epoch e is this input pipeline's share of the shards, files in a
stateless order drawn from `(seed, e)`, read through a parallel interleave and a shuffle buffer
seeded by `(seed, e)`: any epoch can be rebuilt on its own, so a stream can start at any record
(`epoch_stream(start=...)`) and yield what an uninterrupted stream yields from there (exactly in a
deterministic run; see input.py for the guarantees otherwise). The epoch's length comes from the
builders' manifest (data/manifest.py) or one counting pass over the files.

Example:
    records, epoch_size = tfrecord_epochs(files, training=True, seed=0, file_shuffle=True,
                                          cycle_length=16, context=None, deterministic=False,
                                          guarded=False, log_py=True)
    ds = epoch_stream(records, epoch_size, start=2_560, repeat=True, shuffle_buffer=10_000,
                      seed=0, pattern="/data/train-*")  # (position, (index in epoch, record))
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from transfer_tf.data import manifest
from transfer_tf.data.skipping import read_shard
from transfer_tf.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE
# The dataset functions here are traced as written: they hold no Python control flow on tensors,
# and AutoGraph converting them (as tf.data does by default) costs ~0.1 s each per new pipeline.
as_written = tf.autograph.experimental.do_not_convert
_EPOCHS_FOREVER = 2**62


def _file_sizes(files: list[str]) -> list[int]:
    # Remote stats are slow one by one; a small pool keeps 1000+ GCS shards to a second or two.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda f: tf.io.gfile.stat(f).length, files))


_counts_lock = threading.Lock()
_counted: dict[tuple[str, ...], list[int]] = {}


def _record_counts(files: list[str]) -> list[int]:
    """Records per file: from the builders' manifests, else one counting pass (memoised)."""
    counts = manifest.record_counts(files)
    if counts is not None:
        return counts
    key = tuple(files)
    with _counts_lock:
        if key in _counted:
            return _counted[key]
    logging.warning(
        "no builder manifest lists these %d shard(s): reading them once to count their records "
        "(the epoch length, needed to continue the input stream mid-run)",
        len(files),
    )
    per_file = tf.data.Dataset.from_tensor_slices(files).map(
        lambda f: (
            tf.data.TFRecordDataset(f)
            .ignore_errors()
            .reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    counts = [int(c) for c in per_file]
    with _counts_lock:
        _counted[key] = counts
    return counts


def tfrecord_epochs(
    files: list[str],
    *,
    training: bool,
    seed: int,
    file_shuffle: bool,
    cycle_length: int,
    context: tf.distribute.InputContext | None,
    deterministic: bool,
    guarded: bool,
    log_py: bool,
    parallel: int = AUTOTUNE,
    read_buffer: int | None = None,
    ledger: int = -1,
) -> tuple[Callable[[tf.Tensor], tf.data.Dataset], Callable[[], int]]:
    """This input pipeline's share of `files`, one epoch at a time.

    Returns `(records, epoch_size)`: `records(epoch)` is the epoch's records (strict mode:
    serialized records from plain `TFRecordDataset`s, nothing per record; skip mode (`guarded`):
    `(shard, index, epoch, record)`, with broken framing skipped, logged and counted, into
    `ledger` too: `skipping.new_ledger`), files in a stateless order drawn from `(seed, epoch)`;
    `epoch_size()` is their number.
    """
    n, i = (context.num_input_pipelines, context.input_pipeline_id) if context else (1, 0)
    per_record = n > 1 and len(files) < n
    if n > 1 and not per_record:
        files = files[i::n]
    sizes = _file_sizes(files) if guarded else [0] * len(files)
    # Skip mode: a shard whose framing breaks loses its rest; its manifest count says how much.
    counts = (manifest.record_counts(files) if guarded else None) or [-1] * len(files)
    num_files = len(files)
    shuffle = training and file_shuffle and not per_record

    def files_of_epoch(epoch):
        order = tf.data.Dataset.range(num_files)
        if shuffle:  # stateless: a fresh, reproducible file order per epoch
            order = order.map(
                as_written(
                    lambda k: tf.random.experimental.index_shuffle(
                        k,
                        tf.stack([tf.constant(seed, tf.int64), epoch]),
                        num_files - 1,
                    )
                )
            )
        table = (tf.constant(files), tf.constant(sizes, tf.int64), tf.constant(counts, tf.int64))
        return order.map(as_written(lambda k: (table[0][k], table[1][k], table[2][k], epoch)))

    if guarded:

        @as_written
        def read(f, s, c, e):
            return read_shard(f, s, c, e, log_py, ledger, buffer_size=read_buffer)

    else:

        @as_written
        def read(f, s, c, e):
            return tf.data.TFRecordDataset(f, buffer_size=read_buffer)

    cycle = max(1, min(cycle_length, num_files))

    def records(epoch):
        out = files_of_epoch(epoch).interleave(
            read,
            cycle_length=cycle,
            block_length=1,
            num_parallel_calls=parallel if parallel == AUTOTUNE else min(parallel, cycle),
            # Per-record sharding needs the same record order in every pipeline.
            deterministic=deterministic or per_record or not training,
        )
        # Per epoch, so that every record is read once per epoch across the pipelines.
        return out.shard(n, i) if per_record else out

    def epoch_size() -> int:
        total = sum(_record_counts(files))
        return max(0, (total - i + n - 1) // n) if per_record else total

    return records, epoch_size


def _seeded_shuffle(ds: tf.data.Dataset, buffer: int, seed: tf.Tensor) -> tf.data.Dataset:
    """`ds.shuffle` whose order is a function of `seed` alone (int64 tensor): not of how many
    epochs came before, nor of TensorFlow's global seed. Called while a dataset function traces:
    its graph's seed is cleared for the shuffle op only (with a global seed, tf.data combines it
    with the op seed, and a global seed of 0 cannot be combined with a tensor op seed at all)."""
    graph = tf.compat.v1.get_default_graph()
    saved = graph.seed
    graph.seed = None
    try:
        return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    finally:
        graph.seed = saved


def epoch_stream(
    records: Callable[[tf.Tensor], tf.data.Dataset],
    epoch_size: Callable[[], int],
    *,
    start: int,
    repeat: bool,
    shuffle_buffer: int,
    seed: int,
    pattern: str,
) -> tf.data.Dataset:
    """`(position, (index in its epoch, element))` from record `start` of the stream of epochs on
    (see module doc); `position` counts from 0 at the start of epoch 0.

    Epoch e is `records(e)` through a shuffle buffer seeded by `(seed, e)`, so any epoch can be
    rebuilt on its own; the first epoch drops its first `start % epoch_size` elements.
    """
    first_epoch, offset = 0, 0
    if start > 0:
        size = epoch_size()
        if size <= 0:
            raise UsageError(f"data pattern '{pattern}': this input pipeline's share is empty")
        first_epoch, offset = divmod(start, size)
    last = _EPOCHS_FOREVER if repeat else first_epoch + 1

    @as_written
    def one_epoch(epoch):
        ds = records(epoch)
        if shuffle_buffer > 1:
            ds = _seeded_shuffle(ds, shuffle_buffer, tf.constant(seed, tf.int64) * 1_000 + epoch)
        # A filter on the position in the epoch (rather than `skip`) has no state of its own, so
        # an iterator checkpointed by a stream built from another start step restores into this
        # one (train.checkpoint_input): its positions are already past the cut.
        drop = tf.where(tf.equal(epoch, first_epoch), tf.constant(offset, tf.int64), 0)
        # The index in the epoch stays in the element: dropping it here would cost a function
        # call per record in this sequential stage; the parallel map downstream drops it.
        return ds.enumerate().filter(as_written(lambda j, _: j >= drop))

    return tf.data.Dataset.range(first_epoch, last).flat_map(one_epoch).enumerate(start)
