"""Classify image files with an exported SavedModel.

    python -m pipelines.predict --saved_model=exports/r50 cat.jpg dog.png
    python -m pipelines.predict --saved_model=exports/r50/3 --json --top_k=3 *.jpg

`--saved_model` is a version directory or the export base directory (latest version). Prints the
top-k classes with names and scores per image, or one JSON document with `--json`. A detection
export prints each image's boxes (original pixels), classes and scores (at least --min_score),
and with --draw_dir also writes DIR/<image name>.png with the boxes drawn. A segmentation export
prints the classes present in each image (share of pixels, mean score); --draw_dir writes the
image with its class map overlaid in colour.

    python -m pipelines.predict --saved_model=exports/det --draw_dir=/tmp/drawn street.jpg
"""

import json
import os

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "saved_model", None, "Export version directory, or its parent (latest).", flag_values=FLAGS
)
flags.DEFINE_boolean("json", False, "Print one JSON document instead of text.", flag_values=FLAGS)
flags.DEFINE_integer(
    "top_k",
    None,
    "Classes per image (default and maximum: the export's top-k).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "min_score",
    0.3,
    "Detection exports: report detections scoring at least this.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "draw_dir",
    None,
    "Detection / segmentation exports: write each image with its boxes / class-map overlay as "
    "DIR/NAME.png.",
    flag_values=FLAGS,
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Classifies the images `argv[1:]` (absl's argv) as the parsed flags say; returns the
    binary's stdout: the top-k text per image, or the JSON document with --json."""
    cli.require_flags("saved_model", flag_values=flag_values)
    images = argv[1:]
    if not images:
        raise cli.UsageError("no images given (usage: predict --saved_model=DIR IMAGE [IMAGE...])")
    top_k = flag_values.top_k
    if top_k is not None and top_k <= 0:
        raise cli.UsageError(f"--top_k: expected a positive integer, got {top_k}")
    from transfer_tf.export.predict import Predictor, check_image_paths, format_text

    check_image_paths(images)  # fail before the (slow) model load
    predictor = Predictor(flag_values.saved_model)
    from transfer_tf.detection import predict as detection
    from transfer_tf.segmentation import predict as segmentation

    if segmentation.is_segmentation_output(predictor.output_names):
        return _segment(predictor, images, flag_values)
    if detection.is_detection_output(predictor.output_names):
        results = detection.detect_files(predictor, images, min_score=flag_values.min_score)
        if flag_values.draw_dir:
            for result in results:
                name = os.path.splitext(os.path.basename(result["image"]))[0] + ".png"
                result["drawn"] = detection.draw_detections(
                    result["image"], result, os.path.join(flag_values.draw_dir, name)
                )
        if flag_values.json:
            return json.dumps({"saved_model": predictor.version_dir, "detections": results})
        return detection.format_detections(results)
    predictions = predictor.predict_files(images, top_k=top_k)
    if flag_values.json:
        doc = {
            "saved_model": predictor.version_dir,
            "predictions": [p.to_dict() for p in predictions],
        }
        return json.dumps(doc, indent=2)
    return format_text(predictions)


def _segment(predictor, images: list[str], flag_values: flags.FlagValues) -> str:
    """A segmentation export's answer: classes present per image (text or --json), and with
    --draw_dir each image with its class map overlaid as DIR/NAME.png."""
    from transfer_tf.segmentation import predict as segmentation

    results = segmentation.segment_files(predictor, images)
    for result in results:
        if flag_values.draw_dir:
            name = os.path.splitext(os.path.basename(result["image"]))[0] + ".png"
            result["drawn"] = segmentation.draw_overlay(
                result["image"], result, os.path.join(flag_values.draw_dir, name)
            )
    if flag_values.json:
        rows = [{k: v for k, v in r.items() if k != "class_map"} for r in results]
        return json.dumps({"saved_model": predictor.version_dir, "segments": rows})
    return segmentation.format_segments(results)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv))


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
