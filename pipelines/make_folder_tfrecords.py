"""Your own images `root/<class>/*.{jpg,jpeg,png,bmp,gif}` -> classification TFRecord shards.

    python -m pipelines.make_folder_tfrecords --root=photos/ --output_dir=photos_tfrecords \
        --validation_fraction=0.1

Classes are the sorted subfolders; `labels.txt`/`label_names.txt` list them in class-index order.
"""

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.data.builders import build_folder, write_flags

flags.DEFINE_string("root", None, "Folder with one subfolder of images per class.")
flags.DEFINE_string("output_dir", None, "Where the shards, labels.txt and manifest.json go.")
flags.DEFINE_integer("train_shards", 16, "Number of train-*-of-N shards.")
flags.DEFINE_integer("validation_shards", 4, "Number of validation-*-of-N shards.")
flags.DEFINE_float(
    "validation_fraction", 0.0, "Fraction of each class held out as validation-* shards."
)
flags.DEFINE_integer("label_offset", 1, "Stored label = class index + this.")
flags.DEFINE_integer("seed", 0, "Seed of the train/validation split and the training shuffle.")
write_flags.define_write_flags()
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("root", "output_dir")
    manifest = build_folder(
        FLAGS.root,
        FLAGS.output_dir,
        train_shards=FLAGS.train_shards,
        validation_shards=FLAGS.validation_shards,
        validation_fraction=FLAGS.validation_fraction,
        label_offset=FLAGS.label_offset,
        seed=FLAGS.seed,
        options=write_flags.write_options_from_flags(),
    )
    logging.info("Manifest: %s", manifest or "pending (other tasks' shards unfinished)")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
