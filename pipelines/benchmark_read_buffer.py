"""Raw TFRecord read rate per read-buffer size, on any TF filesystem (local disk, gs://, ...).

    python -m pipelines.benchmark_read_buffer --file_pattern='gs://bucket/imagenet/train-0000*'

Reads every record of the matched shards (framing only, no decode) through the input pipeline's
interleave (`--cycle_length` files at once, `--parallel_reads` parallel calls) once per buffer
size in `--buffer_sizes_kib`, round by round, and prints one JSON line with the median MB/s and
records/s of each. The input pipeline uses TensorFlow's default (256 KiB) for local patterns and
8 MiB (`input.REMOTE_READ_BUFFER`, the TPU reference input's) for remote ones; this binary is how
to check that choice on a given store. Locally the page cache serves repeated rounds, so local
numbers measure the per-call overhead, not the disk.
"""

import json
import statistics
import time

from absl import flags

from transfer_tf import cli

flags.DEFINE_string("file_pattern", None, "Glob(s) of TFRecord files, comma-separated.")
flags.DEFINE_list("buffer_sizes_kib", ["256", "8192"], "Read buffer sizes to time, in KiB.")
flags.DEFINE_integer("cycle_length", 16, "Shards read at once (data.cycle_length).")
flags.DEFINE_integer("parallel_reads", -1, "Interleave parallel calls (-1: AUTOTUNE).")
flags.DEFINE_integer("rounds", 3, "Timing rounds per buffer size (the median is reported).")
FLAGS = flags.FLAGS


def _read_all(files: list[str], buffer_bytes: int) -> tuple[int, int, float]:
    """(records, bytes, seconds) for one pass over `files`."""
    import tensorflow as tf

    parallel = tf.data.AUTOTUNE if FLAGS.parallel_reads < 0 else FLAGS.parallel_reads
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=buffer_bytes),
        cycle_length=max(1, min(FLAGS.cycle_length, len(files))),
        block_length=1,
        num_parallel_calls=parallel,
        deterministic=False,
    )
    ds = ds.map(lambda r: tf.cast(tf.strings.length(r), tf.int64)).batch(256)
    records = size = 0
    start = time.perf_counter()
    for lengths in ds:
        records += int(lengths.shape[0])
        size += int(lengths.numpy().sum())
    return records, size, time.perf_counter() - start


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("file_pattern")
    from transfer_tf.data.files import list_files

    files = list_files(FLAGS.file_pattern)
    sizes = [int(k) for k in FLAGS.buffer_sizes_kib]
    timings: dict[int, list[tuple[int, int, float]]] = {k: [] for k in sizes}
    for _ in range(FLAGS.rounds):
        for kib in sizes:
            timings[kib].append(_read_all(files, kib * 1024))
    result = {"files": len(files), "results": {}}
    for kib, runs in timings.items():
        records, size = runs[0][0], runs[0][1]
        seconds = statistics.median(t for _, _, t in runs)
        result["results"][f"{kib}KiB"] = {
            "records": records,
            "MB": round(size / 1e6, 1),
            "MB_per_sec": round(size / 1e6 / seconds, 1),
            "records_per_sec": round(records / seconds),
        }
    print(json.dumps(result), flush=True)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
