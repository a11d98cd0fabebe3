"""COCO builder at train2017 scale vs Model Garden: prints one JSON line (peak PSS/RSS, wall time).

    python -m pipelines.benchmark_coco_tfrecords --work_dir=/tmp/bench_coco --scale=1 \
        --workers=1,2,4 --model_garden_dir=/tmp/mg/pkg
    # Both tools at their defaults on 3,000 photo-sized JPEGs, 8 shards (issue 34):
    python -m pipelines.benchmark_coco_tfrecords --scale=0.02536 --image_size=640x480 \
        --num_shards=8 --masks=false --workers=default --model_garden_processes=default \
        --model_garden_dir=/tmp/mg/pkg

The generated JSON and images are kept under --work_dir (per scale) and reused by later runs.
--model_garden_dir is a folder holding Model Garden's `official` package importable without its
pinned dependencies (BENCHMARKS.md says how); empty skips it.
"""

import json

from absl import flags

from transfer_tf import cli
from transfer_tf.benchmarks.coco_builder import run_benchmark

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "work_dir", "/tmp/bench_coco", "Scratch folder (generated data is cached).", flag_values=FLAGS
)
flags.DEFINE_float(
    "scale",
    1.0,
    "Fraction of train2017's 118,287 images / 860,001 annotations.",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "workers",
    ["1", "2", "4"],
    "--num_workers values to run our builder with ('default': the flag left out).",
    flag_values=FLAGS,
)
flags.DEFINE_list("masks", ["false", "true"], "--include_masks values to run.", flag_values=FLAGS)
flags.DEFINE_string(
    "model_garden_dir",
    "",
    "PYTHONPATH entry holding Model Garden's `official`.",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "model_garden_processes",
    ["0"],
    "Its --num_processes values (0: streaming; 'default': the flag left out, os.cpu_count()).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_shards", 32, "Shards written by every run.", flag_values=FLAGS)
flags.DEFINE_string(
    "image_size",
    "32x32",
    "WIDTHxHEIGHT of the generated JPEGs: 32x32 is one flat image (annotation handling only); "
    "larger sizes are 100 distinct photo-like JPEGs (decode and validation measured too).",
    flag_values=FLAGS,
)


def _ints(name: str, values: list[str]) -> list[int | None]:
    try:
        return [None if v == "default" else int(v) for v in values]
    except ValueError:
        raise cli.UsageError(f"--{name}: expected integers or 'default', got {values}") from None


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise cli.UsageError(f"--image_size: expected WIDTHxHEIGHT, got {value!r}") from None
    if width < 32 or height < 32:
        raise cli.UsageError(f"--image_size: expected at least 32x32, got {value!r}")
    return width, height


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Runs the benchmark as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: the results as one JSON line."""
    cli.reject_extra_args(argv)
    if not 0 < flag_values.scale <= 1:
        raise cli.UsageError(f"--scale must be in (0, 1], got {flag_values.scale}")
    masks = []
    for m in flag_values.masks:
        if m.lower() not in ("true", "false"):
            raise cli.UsageError(f"--masks: expected true/false values, got {flag_values.masks}")
        masks.append(m.lower() == "true")
    result = run_benchmark(
        flag_values.work_dir,
        scale=flag_values.scale,
        workers=_ints("workers", flag_values.workers),
        masks=masks,
        model_garden_dir=flag_values.model_garden_dir,
        model_garden_processes=_ints("model_garden_processes", flag_values.model_garden_processes),
        num_shards=flag_values.num_shards,
        image_size=_size(flag_values.image_size),
    )
    return json.dumps(result)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
