"""The input benchmark's data: ImageNet-sized photo (or noise) JPEGs in classification shards.

    python -m pipelines.make_benchmark_shards --output_dir=/tmp/bench --photo_dir=photos/ \
        --num_images=3000
    python -m pipelines.benchmark_input --file_pattern='/tmp/bench/train-*'

Prints one JSON line of size stats (mean/median JPEG bytes, mean pixels, bytes per pixel). The same
flags give byte-identical shards.
"""

import json

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "output_dir",
    None,
    "Where the train-*-of-N shards go (created if needed).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_images", 3000, "Images to write.", flag_values=FLAGS)
flags.DEFINE_enum(
    "kind",
    "photos",
    ["photos", "noise"],
    "photos: random crops of --photo_dir's photographs; noise: worst-case-entropy images.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "photo_dir",
    "",
    "Folder of *.jpg/*.jpeg/*.png photographs (--kind=photos).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_shards", 16, "Number of train-*-of-N shards.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of crops, flips, qualities and labels.", flag_values=FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Writes the shards as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: their size stats as one JSON line."""
    cli.reject_extra_args(argv)
    cli.require_flags("output_dir", flag_values=flag_values)
    if flag_values.kind == "photos":
        cli.require_flags("photo_dir", flag_values=flag_values)
    from transfer_tf.benchmarks.input_shards import write_benchmark_shards

    stats = write_benchmark_shards(
        flag_values.output_dir,
        flag_values.num_images,
        kind=flag_values.kind,
        photo_dir=flag_values.photo_dir,
        num_shards=flag_values.num_shards,
        seed=flag_values.seed,
    )
    return json.dumps(stats)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
