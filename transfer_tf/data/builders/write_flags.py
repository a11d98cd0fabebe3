"""The parallelism flags shared by every TFRecord builder binary (`pipelines/make_*_tfrecords.py`)."""

from __future__ import annotations

from absl import flags

from transfer_tf.data.builders.sharded_writer import WriteOptions


def define_write_flags() -> None:
    """Defines `--num_workers`, `--task_index` and `--num_tasks`."""
    flags.DEFINE_integer("num_workers", 1, "Worker processes (each writes whole shards).")
    flags.DEFINE_integer("task_index", 0, "This machine's index in [0, --num_tasks).")
    flags.DEFINE_integer(
        "num_tasks", 1, "Machines sharing the build; each writes every N-th shard."
    )


def write_options_from_flags() -> WriteOptions:
    """The WriteOptions the parsed flags ask for."""
    f = flags.FLAGS
    return WriteOptions(f.num_workers, f.task_index, f.num_tasks)
