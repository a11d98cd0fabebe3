"""Callbacks-style hooks of the training loop: TensorBoard summaries and progress output.

A hook receives `on_train_begin(trainer, start_step, end_step)`, `on_execution_end(step, logs)`
after every `steps_per_execution` block (logs: `loss`, `learning_rate`, `images_per_sec`,
`step_time_ms`), `on_eval_end(step, metrics)` and `on_train_end(step, logs)`. Checkpointing and
NaN/Inf detection live in the loop itself (they decide what is saved).

Example:
    hooks = [SummaryHook(writer_dir), ProgressHook(log_every_steps=100)]
"""

from __future__ import annotations

import json
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

    def write_hparams(self, config: dict) -> None:
        """The run's resolved config as TensorBoard HParams (flattened `section.key` names)."""
        from tensorboard.plugins.hparams import api as hparams_api

        with self._train.as_default(step=0):
            hparams_api.hparams(flat_hparams(config))
        self._train.flush()

    def on_eval_end(self, step: int, metrics: dict) -> None:
        with self._eval.as_default(step=step):
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    tf.summary.scalar(key, value)
        self._eval.flush()

    def on_train_end(self, step: int, logs: dict) -> None:
        self._train.flush()
        self._eval.flush()


def flat_hparams(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """`{"train.global_batch_size": 1024, ...}`: HParams take scalars, so lists, dicts inside
    lists and None are JSON text."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


class ProfileHook(Hook):
    """Writes a TensorBoard profile (`tf.profiler`) of the steps after global step `start` through
    `stop` into `log_dir` (TensorBoard's Profile tab, `log_dir/plugins/profile/`). Steps run in
    `steps_per_execution` blocks: the profile starts after the block that reaches `start` and
    stops after the one that reaches `stop`."""

    def __init__(self, start: int, stop: int, log_dir: str):
        self.start, self.stop, self.log_dir = start, stop, log_dir
        self._running = self._done = False

    def on_execution_end(self, step: int, logs: dict) -> None:
        if not self._running and not self._done and self.start <= step < self.stop:
            tf.profiler.experimental.start(self.log_dir)
            self._running = True
            logging.info(
                "profiling from global step %d to %d into %s", step, self.stop, self.log_dir
            )
        elif self._running and step >= self.stop:
            self._finish(step)

    def on_train_end(self, step: int, logs: dict) -> None:
        if self._running:
            self._finish(step)

    def _finish(self, step: int) -> None:
        tf.profiler.experimental.stop()
        self._running, self._done = False, True
        logging.info("profile up to global step %d written to %s", step, self.log_dir)


_LOOP_LOGS = ("loss", "total_loss", "learning_rate", "images_per_sec", "step_time_ms")


def format_duration(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`, `2d04h`: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressHook(Hook):
    """A one-line progress bar in an interactive terminal; otherwise a concise log line every
    `log_every_steps` steps (absl logging, so it lands in log files).

    The line ends with the ETA of the phase (this `train` call) and, when the run goes on after
    it (`run_end_step`: fine-tuning's later phases), of the run: remaining steps x the mean step
    time since the first block of the call (that block holds the tracing/compilation).
    """

    def __init__(
        self,
        log_every_steps: int = 100,
        stream=None,
        run_end_step: int | None = None,
        clock=time.monotonic,
    ):
        self.log_every_steps = max(1, log_every_steps)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.run_end_step = run_end_step
        self._clock = clock
        self._next_log = 0
        self._start = self._end = 0
        self._t0 = 0.0
        self._rate_from: tuple[int, float] | None = None  # (step, time) after the first block

    def on_train_begin(self, trainer, start_step: int, end_step: int) -> None:
        self._start, self._end = start_step, end_step
        self._next_log = start_step + self.log_every_steps
        self._t0 = time.time()
        self._rate_from = None

    def eta(self, step: int) -> str:
        """`ETA 12m05s` (phase), `ETA 12m05s, run 1h02m` (phases after it); `ETA ?` until a
        rate is known."""
        now = self._clock()
        if self._rate_from is None:
            self._rate_from = (step, now)
            return "ETA ?"
        first_step, first_time = self._rate_from
        if step <= first_step:
            return "ETA ?"
        per_step = (now - first_time) / (step - first_step)
        text = f"ETA {format_duration(per_step * max(self._end - step, 0))}"
        if self.run_end_step and self.run_end_step > self._end:
            text += f", run {format_duration(per_step * (self.run_end_step - step))}"
        return text

    def _line(self, step: int, logs: dict) -> str:
        # An objective's own metrics (e.g. SSL embedding_std) follow the loop's.
        extra = "".join(f" {k} {v:.4g}" for k, v in logs.items() if k not in _LOOP_LOGS)
        return (
            f"step {step}/{self._end} loss {logs['loss']:.4f} lr {logs['learning_rate']:.4g} "
            f"{logs['images_per_sec']:.1f} img/s {logs['step_time_ms']:.1f} ms/step{extra} "
            f"{self.eta(step)}"
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
        elif self._rate_from is None:
            self.eta(step)  # start the rate clock after the first block even when not logging

    def on_eval_end(self, step: int, metrics: dict) -> None:
        if self.tty:
            self.stream.write("\n")
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        logging.info("eval at step %d: %s", step, shown)

    def on_train_end(self, step: int, logs: dict) -> None:
        if self.tty:
            self.stream.write("\n")
        logging.info("training reached step %d in %.1fs", step, time.time() - self._t0)
