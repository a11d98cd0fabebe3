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

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "file_pattern", None, "Glob(s) of TFRecord files, comma-separated.", flag_values=FLAGS
)
flags.DEFINE_list(
    "buffer_sizes_kib", ["256", "8192"], "Read buffer sizes to time, in KiB.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "cycle_length", 16, "Shards read at once (data.cycle_length).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "parallel_reads", -1, "Interleave parallel calls (-1: AUTOTUNE).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "rounds", 3, "Timing rounds per buffer size (the median is reported).", flag_values=FLAGS
)


def _read_all(
    files: list[str], buffer_bytes: int, cycle_length: int, parallel_reads: int
) -> tuple[int, int, float]:
    """(records, bytes, seconds) for one pass over `files`."""
    import tensorflow as tf

    parallel = tf.data.AUTOTUNE if parallel_reads < 0 else parallel_reads
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=buffer_bytes),
        cycle_length=max(1, min(cycle_length, len(files))),
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


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Times the reads as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: the rates per buffer size as one JSON line."""
    cli.reject_extra_args(argv)
    cli.require_flags("file_pattern", flag_values=flag_values)
    try:
        sizes = [int(k) for k in flag_values.buffer_sizes_kib]
    except ValueError:
        raise cli.UsageError(
            f"--buffer_sizes_kib: expected integers, got {flag_values.buffer_sizes_kib}"
        ) from None
    from transfer_tf.data.files import list_files

    files = list_files(flag_values.file_pattern)
    timings: dict[int, list[tuple[int, int, float]]] = {k: [] for k in sizes}
    for _ in range(flag_values.rounds):
        for kib in sizes:
            timings[kib].append(
                _read_all(files, kib * 1024, flag_values.cycle_length, flag_values.parallel_reads)
            )
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
    return json.dumps(result)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
