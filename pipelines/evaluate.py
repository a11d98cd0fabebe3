"""Evaluate a training run: `python -m pipelines.evaluate --model_dir=DIR [--checkpoint=PREFIX]`.

Writes the metrics JSON (top-1/top-5 for single-label runs, mAP/F1 for multi-label, COCOeval
AP/AP50/AP75/APs/APm/APl for detection runs, mIoU/pixel_accuracy/per_class_iou at original size
for segmentation runs, kNN top-1 for self-supervised pretraining runs) to
`--output` (default DIR/eval_metrics.json) and prints it. Without --checkpoint a damaged newest
checkpoint is skipped for the newest intact one (a warning names both); a damaged --checkpoint is
an error naming its file and the intact ones. Evaluating never takes the run's lock.
"""

import json
import os

from absl import flags

from transfer_tf import cli
from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.io_errors import check_writable

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "model_dir", None, "A training run directory (holds config.yaml).", flag_values=FLAGS
)
flags.DEFINE_string(
    "checkpoint", None, "Checkpoint prefix; default: the latest in model_dir.", flag_values=FLAGS
)
flags.DEFINE_string(
    "eval_pattern",
    None,
    "Eval TFRecords; default: data.eval_pattern of the run.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "output",
    None,
    "Metrics JSON path; default MODEL_DIR/eval_metrics.json.",
    flag_values=FLAGS,
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Evaluates as the parsed flags say (`argv`: absl's, the program name first) and writes the
    metrics JSON; returns the binary's stdout: the scalar metrics as one JSON line."""
    cli.reject_extra_args(argv)
    cli.require_flags("model_dir", flag_values=flag_values)
    from transfer_tf.ssl.settings import is_self_supervised
    from transfer_tf.training.checkpoints import read_run_config

    run_cfg = read_run_config(flag_values.model_dir)
    path = flag_values.output or os.path.join(flag_values.model_dir, "eval_metrics.json")
    # Before the model is built and the eval data read: an unwritable output fails in seconds.
    check_writable(
        os.path.dirname(path) or ".",
        "--output" if flag_values.output else "--model_dir (eval_metrics.json; --output elsewhere)",
    )
    if run_cfg.transfer.task == "detection":
        from transfer_tf.detection.evaluation import evaluate_run  # COCOeval AP metrics
    elif run_cfg.transfer.task == "segmentation":
        from transfer_tf.segmentation.evaluation import evaluate_run  # mIoU at original size
    elif is_self_supervised(run_cfg):
        from transfer_tf.ssl.knn import evaluate_run  # kNN top-1: its head is untrained
    else:
        from transfer_tf.training.evaluation import evaluate_run

    metrics = evaluate_run(
        flag_values.model_dir, flag_values.checkpoint, flag_values.eval_pattern or ""
    )
    write_json_atomic(path, metrics)  # OutputError naming the path if the write fails
    return json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv))


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
