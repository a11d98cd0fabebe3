"""Runs one demo stage's binaries: live progress on the console, full log on disk.

By default (`demo.in_process`) the builder, training, evaluate, export and predict calls run in the
demo process through their binaries' own `run_from_flags` (inprocess.py): TensorFlow starts once
instead of once per stage, which was about a third of a CPU demo's time. Every job sets its own
global state (seed, mixed-precision policy, strategy) from its config and Keras' session is
cleared between stages. Other calls, or all with `in_process=False`, run as subprocesses, exactly
as a user would type them.

Example:
    result = run_stage(stage, log_path="demo_out/logs/pretrain.log", echo=print)
    result.status  # "ok" | "failed"
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from transfer_tf import models
from transfer_tf.atomic_io import write_text_atomic
from transfer_tf.demo import inprocess
from transfer_tf.demo.plan import Stage, argv

# Lines of a child's output kept for the error message of a failed stage.
_TAIL_LINES = 15
# TensorFlow start-up chatter printed before its log level applies: kept in the log file, not
# shown on the console.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations|cudart_stub|"
    r"cuda_platform|cuda_executor|Unable to register cu|computation placer already registered|"
    r"TF-TRT Warning|This TensorFlow binary is optimized|Sharding callback duration|"
    # In-process stages: each stage's new model gets its own eval step, which TensorFlow's
    # retracing detector counts as one function retraced (tracing once per model is intended).
    r"triggered tf\.function retracing"
)
# absl's prefix `I1129 00:48:14.712522 140151437175680 file.py:329] message`.
_ABSL_PREFIX = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] ")
_MAX_CHARS = 220
_LEVELS = {"W": "warning", "E": "error", "F": "fatal"}


def console_line(line: str) -> str | None:
    """What the console shows of a child's line: None for start-up noise, absl prefix trimmed."""
    # TensorFlow's Python warnings reach the log twice (its own handler and absl's): keep absl's.
    if _NOISE.search(line) or line.startswith("WARNING:tensorflow:"):
        return None
    match = _ABSL_PREFIX.match(line)
    if match:
        level = match.group(1)
        line = line[match.end() :]
        if level != "I":
            line = f"{_LEVELS[level]}: {line}"
    # The console is for progress; the log file has every line in full.
    return line if len(line) <= _MAX_CHARS else line[: _MAX_CHARS - 3] + "..."


@dataclass
class StageResult:
    """What happened to one stage. status: ok | failed | skipped | unavailable."""

    name: str
    title: str
    status: str
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)
    log: str = ""
    detail: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "commands": self.commands,
            "log": self.log,
            "detail": self.detail,
        }


def child_env() -> dict[str, str]:
    """The binaries' environment: quiet TF C++ logs, this checkout importable from any cwd."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # Line-buffered children so progress shows up as it happens.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_call(
    module: str,
    args: list[str],
    log,
    echo: Callable[[str], None],
    prefix: str,
    stdout_file: str | None,
) -> tuple[int, list[str]]:
    proc = subprocess.Popen(
        argv(module, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stdout_file else subprocess.STDOUT,
        text=True,
        env=child_env(),
        bufsize=1,
    )
    tail: list[str] = []
    if stdout_file:
        # Machine-readable stdout (e.g. --json) goes to its file; stderr is the progress.
        out, err = proc.communicate()
        tmp = f"{stdout_file}.tmp-{os.getpid()}"
        if proc.returncode == 0:
            os.makedirs(os.path.dirname(stdout_file), exist_ok=True)
            with open(tmp, "w") as f:
                f.write(out)
            os.replace(tmp, stdout_file)
        log.write(out + err)
        lines = (out + err).splitlines()
        for line in err.splitlines():
            shown = console_line(line)
            if shown is not None:
                echo(f"{prefix}{shown}")
        return proc.returncode, lines[-_TAIL_LINES:]
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        log.write(line + "\n")
        log.flush()
        shown = console_line(line)
        if shown is not None:
            echo(f"{prefix}{shown}")
        tail = (tail + [line])[-_TAIL_LINES:]
    return proc.wait(), tail


def _run_call_in_process(
    module: str,
    args: list[str],
    log,
    echo: Callable[[str], None],
    prefix: str,
    stdout_file: str | None,
) -> tuple[int, list[str]]:
    """The call's library job in this process, logged like a child; (1, tail) when it raises."""
    # Before TensorFlow's first import (no-op afterwards): the C++ start-up chatter, as children.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tail: list[str] = []

    def write(line: str) -> None:
        nonlocal tail
        log.write(line + "\n")
        log.flush()
        shown = console_line(line)
        if shown is not None:
            echo(f"{prefix}{shown}")
        tail = (tail + [line])[-_TAIL_LINES:]

    try:
        with inprocess.captured_logs(write):
            stdout = inprocess.run_call(module, args)
        # The binary's stdout, where a child's goes: its file (e.g. --json), else the stage log.
        if stdout is not None and stdout_file:
            log.write(stdout + "\n")
            write_text_atomic(stdout_file, stdout + "\n")
        elif stdout is not None:
            for line in stdout.splitlines():
                write(line)
        return 0, tail
    except Exception as e:  # noqa: BLE001  (a failing stage is reported, as a child's exit code)
        log.write(traceback.format_exc())
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        write(f"{type(e).__name__}: {first}")
        return 1, tail
    finally:
        models.release_models()


def run_stage(
    stage: Stage,
    log_path: str,
    echo: Callable[[str], None] = print,
    *,
    in_process: bool = False,
) -> StageResult:
    """Runs every call of `stage` in order; stops at the first that fails.

    With `in_process`, calls that `inprocess.supports` run as library calls in this process
    (same flags, same outputs); the others, and every call without it, run as subprocesses.
    The stage is `ok` when every call exits 0 and every `stage.outputs` file exists afterwards.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    result = StageResult(stage.name, stage.title, "ok", commands=stage.commands(), log=log_path)
    start = time.monotonic()
    with open(log_path, "w") as log:
        for module, args in stage.calls:
            call = _run_call_in_process if in_process and inprocess.supports(module) else _run_call
            rc, tail = call(module, args, log, echo, f"  [{stage.name}] ", stage.stdout_file)
            if rc != 0:
                result.status = "failed"
                last = next((t for t in reversed(tail) if t.strip()), "")
                result.detail = f"{module} exited {rc}: {last}"
                break
    result.seconds = time.monotonic() - start
    if result.status == "ok":
        missing = [p for p in stage.outputs if not os.path.exists(p)]
        if missing:
            result.status = "failed"
            result.detail = f"finished but did not write {missing[0]}"
    return result
