"""TFRecord builder benchmark: prints one JSON line (images/s per worker count, peak RSS per size).

    python -m pipelines.benchmark_tfrecords --work_dir=/tmp/bench_tfrecords

Raw trees are generated once under --work_dir and reused by later runs.
"""

import json

from absl import flags

from transfer_tf import cli
from transfer_tf.benchmarks.builders import run_benchmark

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "work_dir", "/tmp/bench_tfrecords", "Scratch folder (raw trees are cached).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "small", 400, "Train images of the small dataset (peak RSS).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "large", 1600, "Train images of the large dataset (peak RSS, images/s).", flag_values=FLAGS
)
flags.DEFINE_list(
    "workers", ["1", "2"], "Worker counts to time on the large dataset.", flag_values=FLAGS
)
flags.DEFINE_integer("min_size", 300, "Smallest generated image side (pixels).", flag_values=FLAGS)
flags.DEFINE_integer("max_size", 500, "Largest generated image side (pixels).", flag_values=FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Runs the benchmark as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: the results as one JSON line."""
    cli.reject_extra_args(argv)
    try:
        workers = [int(w) for w in flag_values.workers]
    except ValueError:
        raise cli.UsageError(f"--workers: expected integers, got {flag_values.workers}") from None
    result = run_benchmark(
        flag_values.work_dir,
        small=flag_values.small,
        large=flag_values.large,
        workers=workers,
        size_range=(flag_values.min_size, flag_values.max_size),
    )
    return json.dumps(result)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
