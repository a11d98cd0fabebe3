"""Checks TFRecord shards and prints one line of JSON: records, per-label counts, undecodable.

    python -m pipelines.inspect_tfrecords --file_pattern='/data/imagenet/validation-*'

Reads shards from this project's builders and from the public tools (imagenet_to_gcs.py,
Model Garden's create_coco_tf_record.py). Exit status 0 even when records are bad: the JSON says
how many (`undecodable`, `unparsable`, `corrupt_files`).
"""

from absl import flags

from transfer_tf import cli
from transfer_tf.data.inspect import inspect_tfrecords, summary_line

flags.DEFINE_string("file_pattern", None, "Glob(s) of TFRecord files, comma-separated.")
flags.DEFINE_enum(
    "schema", "auto", ["auto", "classification", "coco"], "Record schema (auto: detect)."
)
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("file_pattern")
    print(summary_line(inspect_tfrecords(FLAGS.file_pattern, FLAGS.schema)), flush=True)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
