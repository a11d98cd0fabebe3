"""Evaluate a training run: `python -m pipelines.evaluate --model_dir=DIR [--checkpoint=PREFIX]`.

Writes the metrics JSON (top-1/top-5 for single-label runs, mAP/F1 for multi-label, COCOeval
AP/AP50/AP75/APs/APm/APl for detection runs, mIoU/pixel_accuracy/per_class_iou at original size
for segmentation runs, kNN top-1 for self-supervised pretraining runs) to
`--output` (default DIR/eval_metrics.json) and prints it. Without --checkpoint a damaged newest
checkpoint is skipped for the newest intact one (a warning names both); a damaged --checkpoint is
an error naming its file and the intact ones. Evaluating never takes the run's lock.

`--continuous` evaluates a running job (Model Garden's continuous_eval): each new checkpoint as it
appears, its metrics as TensorBoard summaries (`<summaries>/continuous_eval`) and one JSON line
each on stdout (`--output` holds the latest); it stops after the run's final step, or after
`--timeout_s` without a new checkpoint.
"""

import json
import os
import sys

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
flags.DEFINE_bool(
    "continuous",
    False,
    "Evaluate each new checkpoint of a running job as it appears, until its final step.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "timeout_s",
    3600.0,
    "--continuous: stop when no new checkpoint appears for this many seconds.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "poll_s", 30.0, "--continuous: seconds between looks for a new checkpoint.", flag_values=FLAGS
)
flags.DEFINE_string(
    "output",
    None,
    "Metrics JSON path; default MODEL_DIR/eval_metrics.json.",
    flag_values=FLAGS,
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str | None:
    """Evaluates as the parsed flags say (`argv`: absl's, the program name first) and writes the
    metrics JSON; returns the binary's stdout: the scalar metrics as one JSON line (None with
    `--continuous`, which prints a line per checkpoint as it goes)."""
    cli.reject_extra_args(argv)
    cli.require_flags("model_dir", flag_values=flag_values)
    from transfer_tf.ssl.settings import is_self_supervised
    from transfer_tf.training import continuous_eval
    from transfer_tf.training.checkpoints import read_run_config

    if flag_values.continuous:
        if flag_values.checkpoint:
            raise cli.UsageError("--checkpoint and --continuous exclude each other")
        continuous_eval.wait_for_run(
            flag_values.model_dir, flag_values.timeout_s, flag_values.poll_s
        )

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

    if flag_values.continuous:
        for metrics in continuous_eval.continuous_evaluate(
            flag_values.model_dir,
            evaluate_run,
            eval_pattern=flag_values.eval_pattern or "",
            timeout_s=flag_values.timeout_s,
            poll_s=flag_values.poll_s,
        ):
            write_json_atomic(path, metrics)
            print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}))
            sys.stdout.flush()
        return None
    metrics = evaluate_run(
        flag_values.model_dir, flag_values.checkpoint, flag_values.eval_pattern or ""
    )
    write_json_atomic(path, metrics)  # OutputError naming the path if the write fails
    return json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})


def main(argv: list[str]) -> None:
    out = run_from_flags(FLAGS, argv)
    if out is not None:
        print(out)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
