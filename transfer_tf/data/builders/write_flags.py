"""The parallelism flags shared by every TFRecord builder binary (`pipelines/make_*_tfrecords.py`)."""

from __future__ import annotations

from absl import flags

from transfer_tf.data.builders.parallelism import MIN_ITEMS_PER_DEFAULT_WORKER, usable_cores
from transfer_tf.data.builders.sharded_writer import WriteOptions


def define_write_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines `--num_workers`, `--task_index` and `--num_tasks` on `flag_values`."""
    flags.DEFINE_integer(
        "num_workers",
        None,
        "Worker processes (each writes whole shards). Default: the usable cores "
        f"(os.sched_getaffinity; {usable_cores()} here), at most one per "
        f"{MIN_ITEMS_PER_DEFAULT_WORKER} images and one per shard.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "task_index", 0, "This machine's index in [0, --num_tasks).", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "num_tasks",
        1,
        "Machines sharing the build; each writes every N-th shard.",
        flag_values=flag_values,
    )


def write_options_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> WriteOptions:
    """The WriteOptions the parsed flags ask for."""
    return WriteOptions(flag_values.num_workers, flag_values.task_index, flag_values.num_tasks)
