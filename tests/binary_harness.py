"""Run several command lines of one absl binary in ONE Python process (one TensorFlow import).

Every `python -m pipelines.X` subprocess pays ~7 s of imports before it does anything, which
dominates tests of error paths. `run_cases` starts one real subprocess, imports the binary's
module there once and runs each command line through the binary's own entry point (`cli.run`,
`app.run`), restoring absl's global flags and the binary's own `FLAGS` between cases (`flagsaver`)
and capturing file descriptors 1 and 2, so each result carries exactly what a separate process
would print: TensorFlow's C++ logs, absl logging, our `error: ...` line, a traceback. The first
case runs the module import inside its capture, so it is a faithful fresh-process run (start-up
noise included); later cases share the process, which is sound for error paths and short runs
that leave no global state behind.

Example:
    first, second = run_cases("pipelines.pretrain:run", [["--model_dir=x"], ["--bad=1"]])
    assert first.returncode == 2 and "--config" in first.stderr
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside the child: argv[1] = "module:function", argv[2] = JSON list of argv lists,
# argv[3] = where to write the JSON list of results.
_CHILD = r"""
import importlib, json, os, sys, tempfile, traceback
from absl import app, flags
from absl.testing import flagsaver

# app.run defines --help/--helpfull once per process; define them before flagsaver's first
# snapshot so restoring flags after a case does not drop them for the next one.
app.define_help_flags()

target, cases, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
module_name, func_name = target.split(":")
results = []
for args in cases:
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    sys.stdout.flush(); sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(files[0].fileno(), 1); os.dup2(files[1].fileno(), 2)
    code = 0
    try:
        sys.argv = [module_name, *args]
        module = importlib.import_module(module_name)
        # A binary's own FlagValues (not absl's global ones) is restored after the case too.
        own = getattr(module, "FLAGS", flags.FLAGS)
        own_values = flagsaver.save_flag_values(own)
        try:
            with flagsaver.flagsaver():
                getattr(module, func_name)()
        finally:
            flagsaver.restore_flag_values(own_values, own)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
    out, err = [(f.seek(0), f.read().decode("utf-8", "replace"))[1] for f in files]
    results.append({"returncode": code, "stdout": out, "stderr": err})
    with open(out_path, "w") as f:  # after each case: a crash later still reports earlier ones
        json.dump(results, f)
"""


class CaseResult(NamedTuple):
    """What one command line printed and returned (same fields as `CompletedProcess`)."""

    returncode: int
    stdout: str
    stderr: str


class Cases:
    """A started harness process; `results()` waits for it."""

    def __init__(self, proc: subprocess.Popen, out_path: str, n: int):
        self._proc, self._out_path, self._n = proc, out_path, n

    def results(self, timeout: float = 300) -> list[CaseResult]:
        try:
            _, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise
        try:
            with open(self._out_path) as f:
                done = [CaseResult(**r) for r in json.load(f)]
        except FileNotFoundError:
            done = []
        finally:
            if os.path.exists(self._out_path):
                os.remove(self._out_path)
        assert len(done) == self._n, f"harness stopped after {len(done)} cases: {err[-3000:]}"
        return done


def start_cases(
    target: str,
    cases: Sequence[Sequence[str]],
    env: Mapping[str, str] | None = None,
    cwd: str = REPO,
    preexec_fn: Callable[[], object] | None = None,
) -> Cases:
    """Starts the harness for `target` ("module:function", e.g. "pipelines.export:run");
    `preexec_fn` runs in the child before the exec (e.g. to drop privileges, as `subprocess`)."""
    fd, out_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    os.remove(out_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, target, json.dumps([list(c) for c in cases]), out_path],
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    return Cases(proc, out_path, len(cases))


def run_cases(
    target: str,
    cases: Sequence[Sequence[str]],
    env: Mapping[str, str] | None = None,
    cwd: str = REPO,
    timeout: float = 300,
    preexec_fn: Callable[[], object] | None = None,
) -> list[CaseResult]:
    """Runs each argv in `cases` through `target` in one process; one `CaseResult` per case."""
    return start_cases(target, cases, env=env, cwd=cwd, preexec_fn=preexec_fn).results(
        timeout=timeout
    )
