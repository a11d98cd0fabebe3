"""Evaluate a training run: `python -m pipelines.evaluate --model_dir=DIR [--checkpoint=PREFIX]`.

Writes the metrics JSON (top-1/top-5 for single-label runs) to `--output` (default
DIR/eval_metrics.json) and prints it.
"""

import json
import os

from absl import flags

from transfer_tf import cli
from transfer_tf.atomic_io import write_json_atomic

flags.DEFINE_string("model_dir", None, "A training run directory (holds config.yaml).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix; default: the latest in model_dir.")
flags.DEFINE_string("eval_pattern", None, "Eval TFRecords; default: data.eval_pattern of the run.")
flags.DEFINE_string("output", None, "Metrics JSON path; default MODEL_DIR/eval_metrics.json.")
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("model_dir")
    from transfer_tf.training.evaluation import evaluate_run

    metrics = evaluate_run(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.eval_pattern or "")
    path = FLAGS.output or os.path.join(FLAGS.model_dir, "eval_metrics.json")
    write_json_atomic(path, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
