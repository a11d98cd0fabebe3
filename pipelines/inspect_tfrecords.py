"""Checks TFRecord shards and prints one line of JSON: records, per-label counts, rejected records.

    python -m pipelines.inspect_tfrecords --file_pattern='/data/imagenet/validation-*'
    python -m pipelines.inspect_tfrecords --file_pattern='/data/coco/train-*' \
        --config=configs/coco_multilabel_resnet50.yaml        # judge with that run's data section

Reads shards from this project's builders and from the public tools (imagenet_to_gcs.py,
Model Garden's create_coco_tf_record.py), each file once, and judges every record as training
does (label range after data.label_offset, the COCO label map, data.jpeg_only, a full decode),
with the data section of `--config`/`--set` (default: the config defaults). Exit status 0 even
when records are bad: the JSON says how many (`unparsable`, `bad_label`, `not_jpeg`,
`undecodable`, `corrupt_files`) and shows examples.
"""

from absl import flags

from transfer_tf import cli
from transfer_tf.data.inspect import inspect_tfrecords, summary_line

flags.DEFINE_string("file_pattern", None, "Glob(s) of TFRecord files, comma-separated.")
flags.DEFINE_enum(
    "schema",
    "auto",
    ["auto", "classification", "coco"],
    "Record schema (auto: data.schema of --config, else detected).",
)
cli.define_config_flags()
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("file_pattern")
    data_cfg = cli.load_config_from_flags().data if FLAGS.config or FLAGS.set else None
    print(summary_line(inspect_tfrecords(FLAGS.file_pattern, FLAGS.schema, data_cfg)), flush=True)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
