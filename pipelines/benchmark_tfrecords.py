"""TFRecord builder benchmark: prints one JSON line (images/s per worker count, peak RSS per size).

    python -m pipelines.benchmark_tfrecords --work_dir=/tmp/bench_tfrecords

Raw trees are generated once under --work_dir and reused by later runs.
"""

import json

from absl import flags

from transfer_tf import cli
from transfer_tf.benchmarks.builders import run_benchmark

flags.DEFINE_string("work_dir", "/tmp/bench_tfrecords", "Scratch folder (raw trees are cached).")
flags.DEFINE_integer("small", 400, "Train images of the small dataset (peak RSS).")
flags.DEFINE_integer("large", 1600, "Train images of the large dataset (peak RSS, images/s).")
flags.DEFINE_list("workers", ["1", "2"], "Worker counts to time on the large dataset.")
flags.DEFINE_integer("min_size", 300, "Smallest generated image side (pixels).")
flags.DEFINE_integer("max_size", 500, "Largest generated image side (pixels).")
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    try:
        workers = [int(w) for w in FLAGS.workers]
    except ValueError:
        raise cli.UsageError(f"--workers: expected integers, got {FLAGS.workers}") from None
    result = run_benchmark(
        FLAGS.work_dir,
        small=FLAGS.small,
        large=FLAGS.large,
        workers=workers,
        size_range=(FLAGS.min_size, FLAGS.max_size),
    )
    print(json.dumps(result), flush=True)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
