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

flags.DEFINE_string("output_dir", None, "Where the train-*-of-N shards go (created if needed).")
flags.DEFINE_integer("num_images", 3000, "Images to write.")
flags.DEFINE_enum(
    "kind",
    "photos",
    ["photos", "noise"],
    "photos: random crops of --photo_dir's photographs; noise: worst-case-entropy images.",
)
flags.DEFINE_string("photo_dir", "", "Folder of *.jpg/*.jpeg/*.png photographs (--kind=photos).")
flags.DEFINE_integer("num_shards", 16, "Number of train-*-of-N shards.")
flags.DEFINE_integer("seed", 0, "Seed of crops, flips, qualities and labels.")
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("output_dir")
    if FLAGS.kind == "photos":
        cli.require_flags("photo_dir")
    from transfer_tf.benchmarks.input_shards import write_benchmark_shards

    stats = write_benchmark_shards(
        FLAGS.output_dir,
        FLAGS.num_images,
        kind=FLAGS.kind,
        photo_dir=FLAGS.photo_dir,
        num_shards=FLAGS.num_shards,
        seed=FLAGS.seed,
    )
    print(json.dumps(stats), flush=True)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
