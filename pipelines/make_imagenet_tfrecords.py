"""ILSVRC2012 raw dump -> TFRecord shards in the tensorflow/tpu `imagenet_to_gcs.py` schema.

    python -m pipelines.make_imagenet_tfrecords --raw_data_dir=/data/ILSVRC2012 \
        --output_dir=/data/imagenet --num_workers=8

Layout and label rules: `transfer_tf/data/builders/imagenet.py`. A rerun keeps finished shards;
`--task_index/--num_tasks` splits the shards across machines.
"""

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.data.builders import build_imagenet, write_flags

flags.DEFINE_string("raw_data_dir", None, "Folder holding train/<wnid>/*.JPEG and val/.")
flags.DEFINE_string("output_dir", None, "Where the shards, labels.txt and manifest.json go.")
flags.DEFINE_integer("train_shards", 1024, "Number of train-*-of-N shards.")
flags.DEFINE_integer("validation_shards", 128, "Number of validation-*-of-N shards.")
flags.DEFINE_string(
    "validation_labels_file",
    "",
    "For a flat val/: synset_labels.txt (one wnid per line, sorted file-name order) or Kaggle's "
    "LOC_val_solution.csv. Default: either file in --raw_data_dir when present.",
)
flags.DEFINE_string(
    "synset_names_file", "", "Optional 'WNID<TAB>NAME' lines, e.g. LOC_synset_mapping.txt."
)
flags.DEFINE_integer("label_offset", 1, "Stored label = class index + this (1: public shards).")
flags.DEFINE_integer("seed", 0, "Seed of the training-record shuffle.")
write_flags.define_write_flags()
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("raw_data_dir", "output_dir")
    manifest = build_imagenet(
        FLAGS.raw_data_dir,
        FLAGS.output_dir,
        train_shards=FLAGS.train_shards,
        validation_shards=FLAGS.validation_shards,
        validation_labels_file=FLAGS.validation_labels_file,
        synset_names_file=FLAGS.synset_names_file,
        label_offset=FLAGS.label_offset,
        seed=FLAGS.seed,
        options=write_flags.write_options_from_flags(),
    )
    logging.info("Manifest: %s", manifest or "pending (other tasks' shards unfinished)")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
