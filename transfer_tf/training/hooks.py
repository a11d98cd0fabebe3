"""Callbacks-style hooks of the training loop: TensorBoard summaries and progress output.

A hook receives `on_train_begin(trainer, start_step, end_step)`, `on_execution_end(step, logs)`
after every `steps_per_execution` block (logs: `loss`, `learning_rate`, `images_per_sec`,
`step_time_ms`), `on_eval_end(step, metrics)` and `on_train_end(step, logs)`. Checkpointing and
NaN/Inf detection live in the loop itself (they decide what is saved).

Example:
    hooks = [SummaryHook(writer_dir), ProgressHook(log_every_steps=100)]
"""

from __future__ import annotations

import sys
import time

import tensorflow as tf
from absl import logging


class Hook:
    """Base class: override what you need."""

    def on_train_begin(self, trainer, start_step: int, end_step: int) -> None:
        pass

    def on_execution_end(self, step: int, logs: dict) -> None:
        pass

    def on_eval_end(self, step: int, metrics: dict) -> None:
        pass

    def on_train_end(self, step: int, logs: dict) -> None:
        pass


class SummaryHook(Hook):
    """Writes scalars to TensorBoard under `log_dir/train` and `log_dir/eval` every
    `every_steps` steps (the global step is the x axis, so phases and resumes line up)."""

    def __init__(self, log_dir: str, every_steps: int = 100):
        self.every_steps = max(1, every_steps)
        self._train = tf.summary.create_file_writer(f"{log_dir}/train")
        self._eval = tf.summary.create_file_writer(f"{log_dir}/eval")
        self._last = -1

    def on_execution_end(self, step: int, logs: dict) -> None:
        if self._last >= 0 and step - self._last < self.every_steps:
            return
        self._last = step
        with self._train.as_default(step=step):
            for key, value in logs.items():
                tf.summary.scalar(key, value)

    def on_eval_end(self, step: int, metrics: dict) -> None:
        with self._eval.as_default(step=step):
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    tf.summary.scalar(key, value)
        self._eval.flush()

    def on_train_end(self, step: int, logs: dict) -> None:
        self._train.flush()
        self._eval.flush()


_LOOP_LOGS = ("loss", "total_loss", "learning_rate", "images_per_sec", "step_time_ms")


class ProgressHook(Hook):
    """A one-line progress bar in an interactive terminal; otherwise a concise log line every
    `log_every_steps` steps (absl logging, so it lands in log files)."""

    def __init__(self, log_every_steps: int = 100, stream=None):
        self.log_every_steps = max(1, log_every_steps)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._next_log = 0
        self._start = self._end = 0
        self._t0 = 0.0

    def on_train_begin(self, trainer, start_step: int, end_step: int) -> None:
        self._start, self._end = start_step, end_step
        self._next_log = start_step + self.log_every_steps
        self._t0 = time.time()

    def _line(self, step: int, logs: dict) -> str:
        # An objective's own metrics (e.g. SSL embedding_std) follow the loop's.
        extra = "".join(f" {k} {v:.4g}" for k, v in logs.items() if k not in _LOOP_LOGS)
        return (
            f"step {step}/{self._end} loss {logs['loss']:.4f} lr {logs['learning_rate']:.4g} "
            f"{logs['images_per_sec']:.1f} img/s {logs['step_time_ms']:.1f} ms/step{extra}"
        )

    def on_execution_end(self, step: int, logs: dict) -> None:
        if self.tty:
            done = (step - self._start) / max(self._end - self._start, 1)
            bar = "#" * int(30 * done)
            self.stream.write(f"\r[{bar:<30}] {self._line(step, logs)}")
            self.stream.flush()
        elif step >= self._next_log or step >= self._end:
            logging.info(self._line(step, logs))
            self._next_log = step + self.log_every_steps

    def on_eval_end(self, step: int, metrics: dict) -> None:
        if self.tty:
            self.stream.write("\n")
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        logging.info("eval at step %d: %s", step, shown)

    def on_train_end(self, step: int, logs: dict) -> None:
        if self.tty:
            self.stream.write("\n")
        logging.info("training reached step %d in %.1fs", step, time.time() - self._t0)
