"""Classify image files with an exported SavedModel.

    python -m pipelines.predict --saved_model=exports/r50 cat.jpg dog.png
    python -m pipelines.predict --saved_model=exports/r50/3 --json --top_k=3 *.jpg

`--saved_model` is a version directory or the export base directory (latest version). Prints the
top-k classes with names and scores per image, or one JSON document with `--json`.
"""

import json

from absl import flags

from transfer_tf import cli

flags.DEFINE_string("saved_model", None, "Export version directory, or its parent (latest).")
flags.DEFINE_boolean("json", False, "Print one JSON document instead of text.")
flags.DEFINE_integer("top_k", None, "Classes per image (default and maximum: the export's top-k).")
FLAGS = flags.FLAGS


def main(argv):
    cli.require_flags("saved_model")
    images = argv[1:]
    if not images:
        raise cli.UsageError("no images given (usage: predict --saved_model=DIR IMAGE [IMAGE...])")
    if FLAGS.top_k is not None and FLAGS.top_k <= 0:
        raise cli.UsageError(f"--top_k: expected a positive integer, got {FLAGS.top_k}")
    from transfer_tf.export.predict import Predictor, check_image_paths, format_text

    check_image_paths(images)  # fail before the (slow) model load
    predictor = Predictor(FLAGS.saved_model)
    predictions = predictor.predict_files(images, top_k=FLAGS.top_k)
    if FLAGS.json:
        doc = {
            "saved_model": predictor.version_dir,
            "predictions": [p.to_dict() for p in predictions],
        }
        print(json.dumps(doc, indent=2))
        return
    print(format_text(predictions))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
