"""Evaluate a running job's checkpoints as they appear (Model Garden's `continuous_eval` mode).

`continuous_evaluate` waits for the run's config.yaml, then for each new latest checkpoint of
`model_dir/checkpoints` (`tf.train.checkpoints_iterator`: when several were written between two
looks, the newest is evaluated, as in Model Garden) it evaluates it, writes the scalar metrics as
TensorBoard summaries at the checkpoint's global step (`<summaries>/continuous_eval`, beside the
trainer's `train` and `eval`), and hands them to `on_result`. It stops after evaluating the
run's final step (pretraining: `train.train_steps` or epochs x steps per epoch; fine-tuning: the
last phase's end in schedule.json), or when no new checkpoint appears for `timeout_s`. It never
takes the run's lock: it only reads.

Example:
    for metrics in continuous_evaluate("gs://b/runs/r50", evaluate_run, timeout_s=3600):
        ...
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

import tensorflow as tf
from absl import logging

from transfer_tf import cloud_env
from transfer_tf.errors import UsageError
from transfer_tf.training import checkpoints

EvaluateFn = Callable[[str, str, str], dict]  # (model_dir, checkpoint, eval_pattern) -> metrics


def final_step(model_dir: str) -> int:
    """The global step a run ends at: its fine-tuning schedule's last end step, else the
    pretraining plan of its config.yaml."""
    path = os.path.join(model_dir, "schedule.json")
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            phases = json.load(f)
        return max(int(p["end_step"]) for p in phases)
    from transfer_tf.training.run_setup import plan_steps

    return plan_steps(checkpoints.read_run_config(model_dir))[1]


def wait_for_run(model_dir: str, timeout_s: float, poll_s: float) -> None:
    """Waits until `model_dir/config.yaml` exists (an evaluator may start before its trainer).

    Raises:
      UsageError: it did not appear within `timeout_s`.
    """
    path = os.path.join(model_dir, checkpoints.CONFIG_FILE)
    deadline = time.monotonic() + timeout_s
    while not tf.io.gfile.exists(path):
        if time.monotonic() >= deadline:
            raise UsageError(f"--model_dir: no {path} appeared within {timeout_s:g} s")
        time.sleep(poll_s)


def continuous_evaluate(
    model_dir: str,
    evaluate_fn: EvaluateFn,
    *,
    eval_pattern: str = "",
    timeout_s: float = 3600.0,
    poll_s: float = 30.0,
    summary_dir: str | None = None,
) -> Iterator[dict]:
    """Yields the metrics of each new checkpoint of `model_dir` (module doc), each with
    `checkpoint` and `global_step`.

    Args:
      evaluate_fn: evaluates one checkpoint (the run kind's `evaluate_run`).
      timeout_s: stop when no new checkpoint (or no config.yaml yet) appears for this long.
      poll_s: seconds between looks at the checkpoint directory.
      summary_dir: where the eval summaries go (default `cloud_env.summary_dir(model_dir)`
        + `/continuous_eval`).
    Raises:
      UsageError: no config.yaml or no checkpoint appeared within `timeout_s`.
    """
    wait_for_run(model_dir, timeout_s, poll_s)
    writer = tf.summary.create_file_writer(
        summary_dir or os.path.join(cloud_env.summary_dir(model_dir), "continuous_eval")
    )
    ckpt_dir = checkpoints.checkpoint_dir(model_dir)
    evaluated = 0
    last = None
    for prefix in tf.train.checkpoints_iterator(ckpt_dir, poll_s, timeout=timeout_s):
        step = int(prefix.rsplit("-", 1)[1])
        end = final_step(model_dir)  # read again: a resumed run may have been given more steps
        try:
            metrics = evaluate_fn(model_dir, prefix, eval_pattern)
        except tf.errors.NotFoundError as e:  # rotated away (keep_checkpoints) before it was read
            logging.warning("checkpoint %s went away before it was evaluated (%s)", prefix, e)
            continue
        metrics = {**metrics, "checkpoint": prefix, "global_step": step}
        with writer.as_default(step=step):
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tf.summary.scalar(key, value)
        writer.flush()
        evaluated += 1
        last = step
        yield metrics
        if step >= end:
            logging.info("evaluated the final step %d of %s: done", step, model_dir)
            return
    if not evaluated:
        raise UsageError(
            f"--model_dir: no checkpoint appeared in {ckpt_dir} within {timeout_s:g} s"
        )
    logging.info(
        "no new checkpoint in %s for %g s after step %s: stopping", ckpt_dir, timeout_s, last
    )
