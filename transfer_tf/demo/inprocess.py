"""Runs a demo stage's binary calls inside the demo process, so TensorFlow starts once for the
whole demo instead of once per stage.

A call is still a binary command (`pipelines.pretrain --config=... --model_dir=...`, see plan.py):
`run_call` imports the binary, parses a copy of its own flags from the call's arguments and runs
its `run_from_flags`, the function its `main` runs. So the call does what the command does (the
report's commands reproduce a stage by hand) and a flag the demo does not write keeps its binary's
default.

Example:
    if supports(module):
        with captured_logs(write_line):
            stdout = run_call(module, args)  # what `python -m module *args` prints on stdout
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging as std_logging
from collections.abc import Callable, Iterator
from types import ModuleType

from absl import flags, logging

from transfer_tf.errors import UsageError

# Binaries whose jobs can share the demo process: each sets its global state (seed, precision
# policy, strategy) from its config, and Keras' session is cleared between stages. The builders
# fork their workers (as their binaries do) before this process has run any TensorFlow op: the
# demo builds its TFRecords first.
_MODULES = (
    "pipelines.make_imagenet_tfrecords",
    "pipelines.make_coco_tfrecords",
    "pipelines.pretrain",
    "pipelines.finetune",
    "pipelines.evaluate",
    "pipelines.export",
    "pipelines.predict",
)


def supports(module: str) -> bool:
    """Whether `module`'s job can run in this process."""
    return module in _MODULES


def run_call(module: str, args: list[str]) -> str | None:
    """Does what `python -m module *args` does; returns what it would print on stdout (or None).

    Raises on failure: flags.Error for a bad flag, UsageError, or the job's own error.
    """
    if not supports(module):
        raise UsageError(f"{module} has no in-process runner (run it as a subprocess)")
    binary, flag_values, argv = parsed_flags(module, args)
    return binary.run_from_flags(flag_values, argv)


def parsed_flags(module: str, args: list[str]) -> tuple[ModuleType, flags.FlagValues, list[str]]:
    """Imports binary `module` and parses `args` into a copy of its `FLAGS`.

    Returns (the module, the parsed copy, absl's remaining argv with the program name first).
    Every copy starts from the binary's defaults: finetune runs twice in the demo, with and
    without --init_checkpoint, and values a parse of the binary's own `FLAGS` left behind (a
    caller that parsed them in this process) are not inherited.

    Raises:
      flags.Error: a flag the binary does not define, or a bad value.
    """
    binary = importlib.import_module(module)
    flag_values = copy.deepcopy(binary.FLAGS)
    # Per flag: FlagValues.unparse_flags() would also log a line on every call.
    for name in list(flag_values):
        flag_values[name].unparse()
    argv = flag_values([module, *args])
    return binary, flag_values, argv


class _LineHandler(std_logging.Handler):
    def __init__(self, write: Callable[[str], None]):
        super().__init__()
        self._write = write
        self.setFormatter(logging.PythonFormatter())

    def emit(self, record: std_logging.LogRecord) -> None:
        try:
            for line in self.format(record).splitlines():
                self._write(line)
        except Exception:  # noqa: BLE001  (a log line must never fail the stage)
            self.handleError(record)


@contextlib.contextmanager
def captured_logs(write_line: Callable[[str], None]) -> Iterator[None]:
    """Within the block, absl log lines (absl-formatted, one string per line) go to `write_line`
    instead of stderr, as a child's output would reach its stage log."""
    handler = _LineHandler(write_line)
    # absl's (the jobs' progress) and TensorFlow's Python loggers: what a child writes to stderr.
    loggers = [logging.get_absl_logger(), std_logging.getLogger("tensorflow")]
    previous = [(lg.propagate, lg.level, lg.handlers) for lg in loggers]
    for lg in loggers:
        # Only ours: TensorFlow's logger may carry its own stderr handler.
        lg.handlers = [handler]
        lg.propagate = False
    # INFO lines are the progress, whatever the demo process's own verbosity is.
    loggers[0].setLevel(std_logging.INFO)
    try:
        yield
    finally:
        for lg, (propagate, level, handlers) in zip(loggers, previous, strict=True):
            lg.handlers = handlers
            lg.propagate = propagate
            lg.setLevel(level)
