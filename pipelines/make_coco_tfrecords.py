"""COCO images + instances JSON -> TFRecord shards in Model Garden's schema (drop-in flags).

    python -m pipelines.make_coco_tfrecords --image_dir=coco/train2017 \
        --object_annotations_file=coco/annotations/instances_train2017.json \
        --output_file_prefix=coco_tfrecords/train --num_shards=256 --num_workers=8

Same flags as official/vision/data/create_coco_tf_record.py for boxes and masks
(`--num_processes` is an alias of `--num_workers`); captions and panoptic masks are not supported.
"""

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.data.builders import build_coco, write_flags

FLAGS = flags.FlagValues()
flags.DEFINE_multi_string(
    "image_dir", [], "Directory containing images (repeatable).", flag_values=FLAGS
)
flags.DEFINE_string(
    "object_annotations_file",
    "",
    "COCO instances JSON (boxes and masks).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "image_info_file",
    "",
    "JSON whose 'images' list decides which images are written (default: the annotations file).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "output_file_prefix",
    "/tmp/train",
    "Shards are PREFIX-00000-of-N.tfrecord.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_shards", 32, "Number of output shards.", flag_values=FLAGS)
flags.DEFINE_boolean(
    "include_masks",
    False,
    "Write PNG instance masks (image/object/mask).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "skip_empty",
    False,
    "Drop images that have no annotations in the JSON.",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "strict",
    False,
    "Stop (exit 2, nothing written) when an annotation names an image_id missing from 'images' "
    "or a category_id missing from 'categories'. Default: drop them, count them in the "
    "manifest's 'planning' and log the first few ids.",
    flag_values=FLAGS,
)
write_flags.define_write_flags(FLAGS)
flags.DEFINE_alias("num_processes", "num_workers", flag_values=FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
    """Builds the shards as the parsed flags say (`argv`: absl's, the program name first)."""
    cli.reject_extra_args(argv)
    cli.require_flags("image_dir", flag_values=flag_values)
    manifest = build_coco(
        flag_values.image_dir,
        flag_values.object_annotations_file,
        flag_values.output_file_prefix,
        num_shards=flag_values.num_shards,
        include_masks=flag_values.include_masks,
        skip_empty=flag_values.skip_empty,
        image_info_file=flag_values.image_info_file,
        options=write_flags.write_options_from_flags(flag_values),
        strict=flag_values.strict,
    )
    logging.info("Manifest: %s", manifest or "pending (other tasks' shards unfinished)")


def main(argv: list[str]) -> None:
    run_from_flags(FLAGS, argv)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
