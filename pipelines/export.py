"""Export a trained run as a TF Serving SavedModel: `OUT/<version>/`.

    python -m pipelines.export --model_dir=runs/r50 --export_dir=exports/r50
    python -m pipelines.export --model_dir=runs/coco --export_dir=exports/coco \
        --set=export.top_k=10 --set=data.label_names_file=coco_names.txt

Rebuilds the classifier from `model_dir/config.yaml`, restores the latest checkpoint, and writes
the next integer version (or `--version`). Signatures: `serving_default` (encoded image bytes),
`serving_image_tensor` (uint8 images, any size), `serve_examples` (serialized tf.train.Example).
"""

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.config import config_from_dict, to_dict

flags.DEFINE_string("model_dir", None, "Training run directory (config.yaml + checkpoints/).")
flags.DEFINE_string("export_dir", None, "Export base directory; the version is a subdirectory.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export (default: the latest).")
flags.DEFINE_integer("version", None, "Version to write (default: latest existing + 1).")
flags.DEFINE_multi_string(
    "set",
    [],
    "Override of the run's config for the export, KEY=VALUE (repeatable); only export.*, "
    "data.label_names_file, data.image_size and data.eval_crop_fraction.",
)
FLAGS = flags.FLAGS

# Keys that change the serving graph but not the trained weights.
_EXPORT_OVERRIDABLE = (
    "export.",
    "data.label_names_file",
    "data.image_size",
    "data.eval_crop_fraction",
)


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("model_dir", "export_dir")
    for text in FLAGS.set:
        if not text.split("=", 1)[0].strip().startswith(_EXPORT_OVERRIDABLE):
            raise cli.UsageError(
                f"--set={text}: only {', '.join(_EXPORT_OVERRIDABLE)} can change at export time"
            )
    # Imported here so that flag errors do not pay for importing TensorFlow.
    from transfer_tf.export.saved_model import export_saved_model
    from transfer_tf.training.checkpoints import load_model

    model, cfg = load_model(FLAGS.model_dir, FLAGS.checkpoint)
    cfg = config_from_dict(to_dict(cfg), FLAGS.set)
    path = export_saved_model(model, cfg, FLAGS.export_dir, version=FLAGS.version)
    logging.info("Exported %s to %s", FLAGS.model_dir, path)
    print(f"export: {path}")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
