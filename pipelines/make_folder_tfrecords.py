"""Your own images `root/<class>/*.{jpg,jpeg,png,bmp,gif}` -> classification TFRecord shards.

    python -m pipelines.make_folder_tfrecords --root=photos/ --output_dir=photos_tfrecords \
        --validation_fraction=0.1

Classes are the sorted subfolders; `labels.txt`/`label_names.txt` list them in class-index order.
`--unlabeled`: the images directly inside `--root`, no classes (one class `unlabeled`), for
self-supervised pretraining (`ssl.method: simclr | byol`):

    python -m pipelines.make_folder_tfrecords --root=unlabeled/ --output_dir=ssl_tfrecords --unlabeled
"""

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.data.builders import build_folder, write_flags

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "root", None, "Folder with one subfolder of images per class.", flag_values=FLAGS
)
flags.DEFINE_string(
    "output_dir",
    None,
    "Where the shards, labels.txt and manifest.json go.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("train_shards", 16, "Number of train-*-of-N shards.", flag_values=FLAGS)
flags.DEFINE_integer(
    "validation_shards", 4, "Number of validation-*-of-N shards.", flag_values=FLAGS
)
flags.DEFINE_float(
    "validation_fraction",
    0.0,
    "Fraction of each class held out as validation-* shards.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("label_offset", 1, "Stored label = class index + this.", flag_values=FLAGS)
flags.DEFINE_integer(
    "seed",
    0,
    "Seed of the train/validation split and the training shuffle.",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "unlabeled",
    False,
    "Images directly inside --root, no class subfolders (one class 'unlabeled'): shards for "
    "self-supervised pretraining.",
    flag_values=FLAGS,
)
write_flags.define_write_flags(FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
    """Builds the shards as the parsed flags say (`argv`: absl's, the program name first)."""
    cli.reject_extra_args(argv)
    cli.require_flags("root", "output_dir", flag_values=flag_values)
    manifest = build_folder(
        flag_values.root,
        flag_values.output_dir,
        train_shards=flag_values.train_shards,
        validation_shards=flag_values.validation_shards,
        validation_fraction=flag_values.validation_fraction,
        label_offset=flag_values.label_offset,
        seed=flag_values.seed,
        options=write_flags.write_options_from_flags(flag_values),
        unlabeled=flag_values.unlabeled,
    )
    logging.info("Manifest: %s", manifest or "pending (other tasks' shards unfinished)")


def main(argv: list[str]) -> None:
    run_from_flags(FLAGS, argv)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
