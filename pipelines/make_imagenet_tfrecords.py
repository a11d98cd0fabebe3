"""ILSVRC2012 raw dump -> TFRecord shards in the tensorflow/tpu `imagenet_to_gcs.py` schema.

    python -m pipelines.make_imagenet_tfrecords --raw_data_dir=/data/ILSVRC2012 \
        --output_dir=/data/imagenet --num_workers=8

Layout and label rules: `transfer_tf/data/builders/imagenet.py`. A rerun keeps finished shards;
`--task_index/--num_tasks` splits the shards across machines.
"""

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.data.builders import build_imagenet, write_flags

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "raw_data_dir", None, "Folder holding train/<wnid>/*.JPEG and val/.", flag_values=FLAGS
)
flags.DEFINE_string(
    "output_dir",
    None,
    "Where the shards, labels.txt and manifest.json go.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("train_shards", 1024, "Number of train-*-of-N shards.", flag_values=FLAGS)
flags.DEFINE_integer(
    "validation_shards", 128, "Number of validation-*-of-N shards.", flag_values=FLAGS
)
flags.DEFINE_string(
    "validation_labels_file",
    "",
    "For a flat val/: synset_labels.txt (one wnid per line, sorted file-name order) or Kaggle's "
    "LOC_val_solution.csv. Default: either file in --raw_data_dir when present.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "synset_names_file",
    "",
    "Optional 'WNID<TAB>NAME' lines, e.g. LOC_synset_mapping.txt.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "label_offset",
    1,
    "Stored label = class index + this (1: public shards).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("seed", 0, "Seed of the training-record shuffle.", flag_values=FLAGS)
write_flags.define_write_flags(FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
    """Builds the shards as the parsed flags say (`argv`: absl's, the program name first)."""
    cli.reject_extra_args(argv)
    cli.require_flags("raw_data_dir", "output_dir", flag_values=flag_values)
    manifest = build_imagenet(
        flag_values.raw_data_dir,
        flag_values.output_dir,
        train_shards=flag_values.train_shards,
        validation_shards=flag_values.validation_shards,
        validation_labels_file=flag_values.validation_labels_file,
        synset_names_file=flag_values.synset_names_file,
        label_offset=flag_values.label_offset,
        seed=flag_values.seed,
        options=write_flags.write_options_from_flags(flag_values),
    )
    logging.info("Manifest: %s", manifest or "pending (other tasks' shards unfinished)")


def main(argv: list[str]) -> None:
    run_from_flags(FLAGS, argv)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
