"""Export a trained run as a TF Serving SavedModel: `OUT/<version>/`.

    python -m pipelines.export --model_dir=runs/r50 --export_dir=exports/r50
    python -m pipelines.export --model_dir=runs/coco --export_dir=exports/coco \
        --set=export.top_k=10 --set=data.label_names_file=coco_names.txt

Rebuilds the classifier from `model_dir/config.yaml`, restores the latest checkpoint (a damaged
newest one is skipped for the newest intact one, with a warning; a damaged --checkpoint is an error
naming its file), and writes the next integer version (or `--version`). Signatures:
`serving_default` (encoded image bytes), `serving_image_tensor` (uint8 images, any size),
`serve_examples` (serialized tf.train.Example).
A detection run (`transfer.task: detection`) exports its detector instead: boxes in original
pixels, COCO category ids, names, scores (transfer_tf/detection/export.py); a segmentation run
its segmenter: class maps at original size, per-class scores, names (segmentation/export.py).
"""

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.config import config_from_dict, to_dict

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "model_dir",
    None,
    "Training run directory (config.yaml + checkpoints/).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "export_dir",
    None,
    "Export base directory; the version is a subdirectory (default: AIP_MODEL_DIR, as Vertex AI "
    "sets it).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "checkpoint", None, "Checkpoint prefix to export (default: the latest).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "version", None, "Version to write (default: latest existing + 1).", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "set",
    [],
    "Override of the run's config for the export, KEY=VALUE (repeatable); only export.*, "
    "data.label_names_file, data.image_size, data.eval_crop_fraction and a detector's "
    "detection.score_threshold/nms_iou/max_detections.",
    flag_values=FLAGS,
)

# Keys that change the serving graph but not the trained weights.
_EXPORT_OVERRIDABLE = (
    "export.",
    "data.label_names_file",
    "data.image_size",
    "data.eval_crop_fraction",
    # A detector's decoding (NMS) is part of the serving graph, not of the weights.
    "detection.score_threshold",
    "detection.nms_iou",
    "detection.max_detections",
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Exports as the parsed flags say (`argv`: absl's, the program name first); returns the
    binary's stdout: `export: <version dir>`."""
    cli.reject_extra_args(argv)
    cli.require_flags("model_dir", flag_values=flag_values)
    from transfer_tf.cloud_env import EXPORT_DIR_VARS, output_dir

    export_dir, _ = output_dir(flag_values.export_dir, "--export_dir", EXPORT_DIR_VARS)
    for text in flag_values.set:
        if not text.split("=", 1)[0].strip().startswith(_EXPORT_OVERRIDABLE):
            raise cli.UsageError(
                f"--set={text}: only {', '.join(_EXPORT_OVERRIDABLE)} can change at export time"
            )
    # Imported here so that flag errors do not pay for importing TensorFlow.
    from transfer_tf.export.saved_model import export_saved_model
    from transfer_tf.io_errors import check_writable
    from transfer_tf.training.checkpoints import load_model

    check_writable(export_dir, "--export_dir")  # before the model is built
    model, cfg = load_model(flag_values.model_dir, flag_values.checkpoint)
    cfg = config_from_dict(to_dict(cfg), flag_values.set)
    factory, names = None, None
    if cfg.transfer.task == "detection":
        from transfer_tf.detection.export import DetectionServingModule as factory
    elif cfg.transfer.task == "segmentation":
        from transfer_tf.segmentation.evaluation import class_names
        from transfer_tf.segmentation.export import SegmentationServingModule as factory

        names = class_names(cfg)
    path = export_saved_model(
        model,
        cfg,
        export_dir,
        version=flag_values.version,
        module_factory=factory,
        names=names,
    )
    logging.info("Exported %s to %s", flag_values.model_dir, path)
    return f"export: {path}"


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv))


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
