"""COCO builder at train2017 scale vs Model Garden: prints one JSON line (peak PSS/RSS, wall time).

    python -m pipelines.benchmark_coco_tfrecords --work_dir=/tmp/bench_coco --scale=1 \
        --workers=1,2,4 --model_garden_dir=/tmp/mg/pkg

The generated JSON and images are kept under --work_dir (per scale) and reused by later runs.
--model_garden_dir is a folder holding Model Garden's `official` package importable without its
pinned dependencies (BENCHMARKS.md says how); empty skips it.
"""

import json

from absl import flags

from transfer_tf import cli
from transfer_tf.benchmarks.coco_builder import run_benchmark

flags.DEFINE_string("work_dir", "/tmp/bench_coco", "Scratch folder (generated data is cached).")
flags.DEFINE_float("scale", 1.0, "Fraction of train2017's 118,287 images / 860,001 annotations.")
flags.DEFINE_list("workers", ["1", "2", "4"], "--num_workers values to run our builder with.")
flags.DEFINE_list("masks", ["false", "true"], "--include_masks values to run.")
flags.DEFINE_string("model_garden_dir", "", "PYTHONPATH entry holding Model Garden's `official`.")
flags.DEFINE_list("model_garden_processes", ["0"], "Its --num_processes values (0: streaming).")
flags.DEFINE_integer("num_shards", 32, "Shards written by every run.")
FLAGS = flags.FLAGS


def _ints(name: str, values: list[str]) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise cli.UsageError(f"--{name}: expected integers, got {values}") from None


def main(argv):
    cli.reject_extra_args(argv)
    if not 0 < FLAGS.scale <= 1:
        raise cli.UsageError(f"--scale must be in (0, 1], got {FLAGS.scale}")
    masks = []
    for m in FLAGS.masks:
        if m.lower() not in ("true", "false"):
            raise cli.UsageError(f"--masks: expected true/false values, got {FLAGS.masks}")
        masks.append(m.lower() == "true")
    result = run_benchmark(
        FLAGS.work_dir,
        scale=FLAGS.scale,
        workers=_ints("workers", FLAGS.workers),
        masks=masks,
        model_garden_dir=FLAGS.model_garden_dir,
        model_garden_processes=_ints("model_garden_processes", FLAGS.model_garden_processes),
        num_shards=FLAGS.num_shards,
    )
    print(json.dumps(result), flush=True)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
