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

flags.DEFINE_multi_string("image_dir", [], "Directory containing images (repeatable).")
flags.DEFINE_string("object_annotations_file", "", "COCO instances JSON (boxes and masks).")
flags.DEFINE_string(
    "image_info_file",
    "",
    "JSON whose 'images' list decides which images are written (default: the annotations file).",
)
flags.DEFINE_string("output_file_prefix", "/tmp/train", "Shards are PREFIX-00000-of-N.tfrecord.")
flags.DEFINE_integer("num_shards", 32, "Number of output shards.")
flags.DEFINE_boolean("include_masks", False, "Write PNG instance masks (image/object/mask).")
flags.DEFINE_boolean("skip_empty", False, "Drop images that have no annotations in the JSON.")
write_flags.define_write_flags()
flags.DEFINE_alias("num_processes", "num_workers")
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("image_dir")
    manifest = build_coco(
        FLAGS.image_dir,
        FLAGS.object_annotations_file,
        FLAGS.output_file_prefix,
        num_shards=FLAGS.num_shards,
        include_masks=FLAGS.include_masks,
        skip_empty=FLAGS.skip_empty,
        image_info_file=FLAGS.image_info_file,
        options=write_flags.write_options_from_flags(),
    )
    logging.info("Manifest: %s", manifest or "pending (other tasks' shards unfinished)")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
