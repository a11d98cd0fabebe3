"""Faults a user meets, on the real binaries (issue 30 items 1-4): two writers on one run dir, a
damaged newest checkpoint, a full disk / unwritable output, Ctrl-C and SIGTERM.

One tiny pretraining run (resnet10, 32 px, 6 steps, checkpoints at 2/4/6) is shared by the
module; each test works on a hard-linked copy of it (the binaries replace files by rename and
never write one in place, and damage is done by rewriting a file, so the copies stay
independent). Runs that must live for a while (the lock and signal tests) are started as real
processes with SIGINT at its default action: a background job of a non-interactive shell starts
with SIGINT ignored, which a child would inherit (DESIGN.md, "Faults, as a test meets them").
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf
from binary_harness import run_cases
from tiny_shards import CLASSES, write_shards

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONDONTWRITEBYTECODE="1")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_shards(str(d / "train"), 32, 2, seed=0)
    write_shards(str(d / "validation"), 8, 1, seed=1)
    data_section = f"""
data:
  train_pattern: {d}/train-*
  eval_pattern: {d}/validation-*
  num_classes: {CLASSES}
  label_offset: 1
  num_train_examples: 32
  num_eval_examples: 8
  image_size: 32
  shuffle_buffer: 32
  cycle_length: 2
model:
  name: resnet10
"""
    (d / "pretrain.yaml").write_text(
        f"""name: faults
seed: 3
{data_section}
train:
  global_batch_size: 8
  train_steps: 6
  base_learning_rate: 0.1
  warmup_epochs: 0
  strategy: one_device
  checkpoint_every_steps: 2
  log_every_steps: 2
"""
    )
    (d / "finetune.yaml").write_text(
        f"""name: faults_ft
seed: 3
{data_section}
train:
  global_batch_size: 8
  strategy: one_device
  checkpoint_every_steps: 2
transfer:
  phases:
    - {{name: probe, trainable: head, steps: 2, base_learning_rate: 0.1}}
"""
    )
    return d


def _pretrain(data, model_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipelines.pretrain",
        f"--config={data / 'pretrain.yaml'}",
        f"--model_dir={model_dir}",
        *extra,
    ]


def _intact(prefix: str) -> bool:
    """Whether every tensor of checkpoint `prefix` reads back."""
    from transfer_tf.training.checkpoint_health import find_damage  # (absent before issue 30)

    return find_damage(prefix) is None


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _one_line_error(result) -> str:
    """The single `error:` line of a failed binary run; no traceback."""
    lines = _errors(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def base_run(data, tmp_path_factory):
    """A finished 6-step pretraining run with checkpoints at steps 2, 4 and 6."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    done = subprocess.run(
        _pretrain(data, run_dir), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("ckpt-6")
    return run_dir


def _copy(base, dest):
    """A hard-linked copy of a run dir (see module doc)."""
    shutil.copytree(base, dest, copy_function=os.link)
    return dest


def _rewrite(path, data: bytes | None) -> None:
    """Replaces `path` by a new file holding `data` (None: removes it); a hard-linked original
    is left alone."""
    os.remove(path)
    if data is not None:
        with open(path, "wb") as f:
            f.write(data)


def _damage(run_dir, how: str, step: int = 6) -> str:
    """Damages checkpoint `ckpt-<step>` of `run_dir`; returns the name of the damaged file."""
    prefix = os.path.join(run_dir, "checkpoints", f"ckpt-{step}")
    data_file = f"{prefix}.data-00000-of-00001"
    if how == "truncated_data":
        _rewrite(data_file, open(data_file, "rb").read()[:1000])  # noqa: SIM115
        return data_file
    if how == "truncated_index":
        _rewrite(f"{prefix}.index", open(f"{prefix}.index", "rb").read()[:50])  # noqa: SIM115
        return f"{prefix}.index"
    assert how == "missing_index"
    _rewrite(f"{prefix}.index", None)
    return f"{prefix}.index"


DAMAGES = ("truncated_data", "truncated_index", "missing_index")


# -- item 2: a damaged newest checkpoint -------------------------------------------------------
@pytest.fixture(scope="module")
def damaged(base_run, tmp_path_factory):
    """{damage: (run dir, damaged file)}: copies of the base run with a damaged ckpt-6."""
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for how in DAMAGES:
        run_dir = _copy(base_run, root / how)
        out[how] = (run_dir, _damage(run_dir, how))
    return out


def _plant_live_lock(run_dir) -> None:
    """A lock file of another live run (another host, fresh heartbeat)."""
    lock = {
        "host": "other-host",
        "pid": 1,
        "started": "now",
        "heartbeat": time.time(),
        "token": "x",
    }
    (run_dir / "run.lock").write_text(json.dumps(lock))


@pytest.fixture(scope="module")
def evaluations(damaged, base_run, tmp_path_factory):
    """pipelines/evaluate on each damaged run (no --checkpoint), with the damaged --checkpoint
    named, and on a run whose lock another live run holds (evaluating never needs it)."""
    out = tmp_path_factory.mktemp("eval_out")
    cases = {
        how: [f"--model_dir={run_dir}", f"--output={out / how}.json"]
        for how, (run_dir, _) in damaged.items()
    }
    run_dir, _ = damaged["truncated_data"]
    cases["named"] = [f"--model_dir={run_dir}", f"--checkpoint={run_dir}/checkpoints/ckpt-6"]
    locked = _copy(base_run, out / "locked")
    _plant_live_lock(locked)
    cases["locked"] = [f"--model_dir={locked}"]
    results = run_cases("pipelines.evaluate:run", list(cases.values()), env=ENV)
    return dict(zip(cases, results, strict=True)), out


@pytest.mark.parametrize("how", DAMAGES)
def test_evaluate_uses_the_newest_intact_checkpoint_and_says_so(evaluations, damaged, how):
    results, out = evaluations
    result, (run_dir, damaged_file) = results[how], damaged[how]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert damaged_file in result.stderr  # the warning names the damaged file
    ckpt4 = f"{run_dir}/checkpoints/ckpt-4"
    assert f"using {ckpt4}, the newest intact checkpoint" in result.stderr
    metrics = json.loads((out / f"{how}.json").read_text())
    assert metrics["checkpoint"] == ckpt4 and metrics["num_examples"] == 8
    if how != "missing_index":
        assert os.path.exists(damaged_file)  # a read-only job moves nothing


def test_evaluate_refuses_a_damaged_named_checkpoint(evaluations, damaged):
    results, _ = evaluations
    line = _one_line_error(results["named"])
    run_dir, damaged_file = damaged["truncated_data"]
    assert f"--checkpoint: checkpoint '{run_dir}/checkpoints/ckpt-6' is damaged" in line
    assert damaged_file in line
    ckpts = f"{run_dir}/checkpoints"
    assert f"intact checkpoints: {ckpts}/ckpt-4, {ckpts}/ckpt-2" in line


def test_evaluate_never_needs_the_run_lock(evaluations):
    results, out = evaluations
    assert results["locked"].returncode == 0, results["locked"].stderr[-3000:]
    assert json.loads((out / "locked" / "eval_metrics.json").read_text())["checkpoint"].endswith(
        "ckpt-6"
    )
    assert (out / "locked" / "run.lock").exists()  # left to its holder


@pytest.fixture(scope="module")
def exports(damaged, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    run_dir, _ = damaged["truncated_index"]
    cases = [
        [f"--model_dir={run_dir}", f"--export_dir={out / 'fallback'}"],
        [
            f"--model_dir={run_dir}",
            f"--export_dir={out / 'named'}",
            f"--checkpoint={run_dir}/checkpoints/ckpt-6",
        ],
    ]
    return run_cases("pipelines.export:run", cases, env=ENV), out


def test_export_uses_the_newest_intact_checkpoint(exports, damaged):
    (fallback, _), out = exports
    run_dir, damaged_file = damaged["truncated_index"]
    assert fallback.returncode == 0, fallback.stderr[-3000:]
    assert damaged_file in fallback.stderr
    assert f"using {run_dir}/checkpoints/ckpt-4, the newest intact checkpoint" in fallback.stderr
    assert fallback.stdout.strip().endswith(f"export: {out / 'fallback' / '1'}")
    assert (out / "fallback" / "1" / "saved_model.pb").exists()


def test_export_refuses_a_damaged_named_checkpoint(exports, damaged):
    (_, named), out = exports
    run_dir, damaged_file = damaged["truncated_index"]
    line = _one_line_error(named)
    assert damaged_file in line and f"{run_dir}/checkpoints/ckpt-4" in line
    assert not (out / "named" / "1").exists()


@pytest.fixture(scope="module")
def resumed_runs(data, base_run, tmp_path_factory):
    """{damage: (run dir, damaged file, result)}: pipelines/pretrain rerun on copies of the
    finished run whose ckpt-6 has a truncated data file / no index (both runs in one process)."""
    root = tmp_path_factory.mktemp("resumed")
    runs = {}
    for how in ("truncated_data", "missing_index"):
        run_dir = _copy(base_run, root / how)
        runs[how] = (run_dir, _damage(run_dir, how))
    cases = [_pretrain(data, run_dir)[3:] for run_dir, _ in runs.values()]
    results = run_cases("pipelines.pretrain:run", cases, env=ENV, timeout=600)
    return {how: (*runs[how], r) for how, r in zip(runs, results, strict=True)}


@pytest.mark.parametrize("how", ["truncated_data", "missing_index"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(resumed_runs, how):
    run_dir, damaged_file, result = resumed_runs[how]
    assert result.returncode == 0, result.stderr[-3000:]
    ckpts = run_dir / "checkpoints"
    assert damaged_file in result.stderr  # the warning names the damaged file
    # Not "no checkpoint, step 0" (what a missing newest .index did): the step of ckpt-4.
    assert f"resumed from {ckpts}/ckpt-4 at step 4" in result.stderr
    # The damaged files are kept, moved out of the way of the new ckpt-6.
    kept = sorted(os.listdir(ckpts / "damaged"))
    assert kept and all(k.startswith("ckpt-6.") for k in kept), kept
    if how == "truncated_data":
        assert os.path.basename(damaged_file) in kept
    assert tf.train.latest_checkpoint(str(ckpts)) == f"{ckpts}/ckpt-6"
    assert _intact(f"{ckpts}/ckpt-6")
    assert not (run_dir / "run.lock").exists()


@pytest.fixture(scope="module")
def finetunes(data, damaged, tmp_path_factory):
    """pipelines/finetune from a run whose newest checkpoint is damaged: the run dir (refused),
    then its intact ckpt-4 named as the source."""
    out = tmp_path_factory.mktemp("finetunes")
    source, _ = damaged["truncated_index"]
    config = f"--config={data / 'finetune.yaml'}"
    cases = [
        [config, f"--init_checkpoint={source}", f"--model_dir={out / 'refused'}"],
        [
            config,
            f"--init_checkpoint={source}/checkpoints/ckpt-4",
            f"--model_dir={out / 'from_ckpt4'}",
        ],
    ]
    return run_cases("pipelines.finetune:run", cases, env=ENV, timeout=600), out


def test_finetune_refuses_a_damaged_source_before_creating_its_run_dir(finetunes, damaged):
    (refused, _), out = finetunes
    source, damaged_file = damaged["truncated_index"]
    line = _one_line_error(refused)
    assert line.startswith(f"error: --init_checkpoint: checkpoint '{source}/checkpoints/ckpt-6'")
    assert damaged_file in line and f"{source}/checkpoints/ckpt-4" in line
    assert not (out / "refused").exists()


def test_finetune_from_an_intact_checkpoint_of_that_run(finetunes, damaged):
    (_, ok), out = finetunes
    source, _ = damaged["truncated_index"]
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert f"from model_dir {source}/checkpoints/ckpt-4" in ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["global_step"] == 2


# -- item 3: a full disk, an unwritable output ----------------------------------------------
def _file_size_limit(limit: int):
    """preexec_fn: writes past `limit` bytes fail with EFBIG (Python ignores SIGXFSZ), the
    stand-in for a full disk."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_during_a_checkpoint_write(data, base_run, tmp_path):
    run_dir = _copy(base_run, tmp_path / "run")
    ckpts = run_dir / "checkpoints"
    for name in os.listdir(ckpts):
        if name.startswith("ckpt-6."):
            os.remove(ckpts / name)
    _rewrite(ckpts / "checkpoint", b'model_checkpoint_path: "ckpt-4"\n')
    size = os.path.getsize(ckpts / "ckpt-4.data-00000-of-00001")
    done = subprocess.run(
        _pretrain(data, run_dir),
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_file_size_limit(size // 2),
    )
    line = _one_line_error(done)
    assert f"cannot write checkpoint '{ckpts}/ckpt-6': File too large" in line, line
    assert f"the latest checkpoint is still '{ckpts}/ckpt-4'" in line
    left = sorted(os.listdir(ckpts))
    assert not [n for n in left if "_temp" in n or n.startswith("ckpt-6") or ".tmp" in n], left
    assert tf.train.latest_checkpoint(str(ckpts)) == f"{ckpts}/ckpt-4"
    assert _intact(f"{ckpts}/ckpt-4")
    assert not (run_dir / "run.lock").exists()


def test_disk_full_writing_eval_metrics(base_run, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "pipelines.evaluate",
        f"--model_dir={base_run}",
        f"--output={out / 'eval_metrics.json'}",
    ]
    done = subprocess.run(
        cmd,
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        # Below the metrics JSON (> 100 bytes) but above Python's temp-dir probe at start-up.
        preexec_fn=_file_size_limit(64),
    )
    line = _one_line_error(done)
    assert f"cannot write '{out / 'eval_metrics.json'}': File too large" in line, line
    assert os.listdir(out) == []  # no eval_metrics.json.tmp-* left behind


def _no_root_override() -> None:
    """preexec_fn: drops the capabilities that let root write into a read-only folder, so that a
    test running as root meets permissions as a user does (prctl PR_CAPBSET_DROP)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        libc.prctl(24, cap, 0, 0, 0)


def _read_only(path) -> None:
    """Makes the folders below `path` read-only (nothing can be created, renamed or removed in
    them); the files keep their mode, which they share with the hard-linked base run."""
    for root, _, _ in os.walk(path):
        os.chmod(root, 0o555)


@pytest.fixture(scope="module")
def unwritable(data, base_run, tmp_path_factory):
    """The training, evaluate and export binaries on outputs they cannot write: a read-only run
    dir, and a --model_dir below a regular file."""
    root = tmp_path_factory.mktemp("unwritable")
    (root / "a_file").write_text("")
    not_a_dir = root / "a_file" / "run"
    read_only = _copy(base_run, root / "read_only")
    (root / "ro_exports").mkdir()
    _read_only(read_only)
    _read_only(root / "ro_exports")
    probe = subprocess.run(
        [sys.executable, "-c", f"open({str(read_only / 'x')!r}, 'w')"],
        capture_output=True,
        preexec_fn=_no_root_override,
    )
    enforced = probe.returncode != 0
    config = f"--config={data / 'pretrain.yaml'}"
    results = {
        "pretrain_not_a_dir": run_cases(
            "pipelines.pretrain:run", [[config, f"--model_dir={not_a_dir}"]], env=ENV
        )[0]
    }
    if enforced:
        pre, ev, ex = (
            run_cases(target, [case], env=ENV, preexec_fn=_no_root_override)[0]
            for target, case in [
                ("pipelines.pretrain:run", [config, f"--model_dir={read_only}"]),
                ("pipelines.evaluate:run", [f"--model_dir={read_only}"]),
                (
                    "pipelines.export:run",
                    [f"--model_dir={read_only}", f"--export_dir={root / 'ro_exports'}"],
                ),
            ]
        )
        results.update(pretrain_read_only=pre, evaluate_read_only=ev, export_read_only=ex)
    yield results, read_only, root
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o755)


def _before_any_work(result) -> None:
    # setup_runtime logs the hardware before the model is built and the data read.
    assert "hardware:" not in result.stderr and " img/s " not in result.stderr, result.stderr


def test_model_dir_below_a_file_fails_before_any_work(unwritable):
    results, _, root = unwritable
    result = results["pretrain_not_a_dir"]
    line = _one_line_error(result)
    assert f"--model_dir: cannot write to '{root / 'a_file' / 'run'}': Not a directory" in line
    _before_any_work(result)


@pytest.mark.parametrize(
    "case, message",
    [
        ("pretrain_read_only", "--model_dir: cannot write to '{run}': Permission denied"),
        ("evaluate_read_only", "--model_dir (eval_metrics.json; --output elsewhere): cannot write"),
        ("export_read_only", "--export_dir: cannot write to '{root}/ro_exports': Permission"),
    ],
    ids=["pretrain", "evaluate", "export"],
)
def test_read_only_outputs_fail_before_any_work(unwritable, case, message):
    results, read_only, root = unwritable
    if case not in results:
        pytest.skip("root here keeps CAP_DAC_OVERRIDE: read-only folders are writable")
    result = results[case]
    line = _one_line_error(result)
    assert message.format(run=read_only, root=root) in line, line
    _before_any_work(result)
    assert "Restored" not in result.stderr and "top_1" not in result.stdout
    assert sorted(os.listdir(read_only)) == [
        "checkpoints",
        "config.yaml",
        "runtime.json",
        "summaries",
    ]


# -- item 1: one writer per run dir (the lock, in process) ------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now
    return child.pid


def test_lock_names_its_holder_refreshes_and_goes(tmp_path):
    from transfer_tf.training.run_lock import RunLock

    run_dir = tmp_path / "new_run"
    lock = RunLock(str(run_dir), heartbeat_seconds=0.05)
    lock.acquire()
    try:
        first = json.loads((run_dir / "run.lock").read_text())
        assert first["host"] == socket.gethostname() and first["pid"] == os.getpid()
        assert first["started"] and first["token"] == lock.token
        deadline = time.time() + 60
        while json.loads((run_dir / "run.lock").read_text())["heartbeat"] == first["heartbeat"]:
            assert time.time() < deadline, "the heartbeat was never refreshed"
            time.sleep(0.05)
    finally:
        lock.release()
    assert not run_dir.exists()  # created by the lock and holding nothing else


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    from transfer_tf.training.run_lock import RunLock, RunLockError

    with RunLock(str(tmp_path)):
        with pytest.raises(RunLockError) as refused:
            RunLock(str(tmp_path)).acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert f"--model_dir '{tmp_path}' is in use by another run" in message
    assert f"host {socket.gethostname()}, pid {os.getpid()}" in message
    assert f"delete {tmp_path / 'run.lock'}" in message
    assert not (tmp_path / "run.lock").exists()


@pytest.mark.parametrize(
    "holder, why",
    [
        (lambda: {"host": socket.gethostname(), "pid": _dead_pid()}, "on this host is gone"),
        (lambda: {"host": "other-host", "pid": 1, "heartbeat": time.time() - 86400}, "heartbeat"),
    ],
    ids=["dead_pid", "old_heartbeat"],
)
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, holder, why):
    from transfer_tf.training.run_lock import RunLock

    stale = {"started": "then", "heartbeat": time.time(), "token": "old", **holder()}
    (tmp_path / "run.lock").write_text(json.dumps(stale))
    with RunLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / "run.lock").read_text())["token"] == lock.token
    warnings = [r.getMessage() for r in caplog.records if "taking over the lock" in r.getMessage()]
    assert len(warnings) == 1 and why in warnings[0], caplog.text


def test_a_live_lock_of_another_host_is_not_broken(tmp_path):
    from transfer_tf.training.run_lock import RunLock, RunLockError

    _plant_live_lock(tmp_path)
    with pytest.raises(RunLockError, match="host other-host, pid 1"):
        RunLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["token"] == "x"


# -- item 4 (and item 1 across processes): Ctrl-C, SIGTERM, a second writer ----------------------
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _Live:
    """A binary started in the background whose stderr lines are collected as they come."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.02)
        pytest.fail(f"no line matching {pattern!r}: {self.text[-3000:]}")

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        self._thread.join(timeout=30)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


STEPS = 200
STEP_LINE = rf"step (\d+)/{STEPS} loss"


@pytest.fixture(scope="module")
def stops(data, tmp_path_factory):
    """One live run, and what happened to it: a second writer started beside it, Ctrl-C, a
    rerun with the printed command stopped by SIGTERM, a rerun stopped by two Ctrl-C."""
    run_dir = tmp_path_factory.mktemp("stops") / "run"
    cmd = _pretrain(
        data,
        run_dir,
        f"--set=train.train_steps={STEPS}",
        "--set=train.log_every_steps=1",
        "--set=train.checkpoint_every_steps=100",
        "--set=train.global_batch_size=16",
    )
    out: dict = {"run_dir": run_dir}
    live = []
    try:
        first = _Live(cmd)
        live.append(first)
        first.wait_for(STEP_LINE)
        out["second_writer"] = subprocess.run(
            cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
        )
        out["first_pid"] = first.proc.pid
        first.proc.send_signal(signal.SIGINT)
        out["sigint"] = (first.finish(), first.text)

        resume = re.search(r"^resume with: (.*)$", first.text, re.M).group(1)
        words = shlex.split(resume)
        assert words[:3] == ["python", "-m", "pipelines.pretrain"], resume
        rerun = _Live([sys.executable, *words[1:]])
        live.append(rerun)
        out["rerun_resumed"] = rerun.wait_for(r"resumed from .*ckpt-(\d+) at step (\d+)")
        stepped = rerun.wait_for(STEP_LINE)
        out["rerun_first_step"] = int(stepped.group(1))
        rerun.proc.send_signal(signal.SIGTERM)
        out["sigterm"] = (rerun.finish(), rerun.text)

        third = _Live(cmd)
        live.append(third)
        third.wait_for(STEP_LINE)
        third.proc.send_signal(signal.SIGINT)
        third.wait_for(r"received SIGINT")
        third.proc.send_signal(signal.SIGINT)
        out["double"] = (third.finish(), third.text)
    finally:
        for proc in live:
            proc.kill()
    return out


def _stopped_at(text: str, name: str, run_dir) -> int:
    match = re.search(rf"^stopped by {name} at global step (\d+); checkpoint: (\S+)$", text, re.M)
    assert match, text[-3000:]
    step = int(match.group(1))
    assert match.group(2) == f"{run_dir}/checkpoints/ckpt-{step}"
    return step


def test_a_second_writer_exits_at_once_naming_the_first(stops):
    result = stops["second_writer"]
    line = _one_line_error(result)
    assert f"--model_dir '{stops['run_dir']}' is in use by another run" in line
    assert f"host {socket.gethostname()}, pid {stops['first_pid']}," in line
    assert "hardware:" not in result.stderr  # at once: before any model or data work


def test_ctrl_c_saves_at_the_step_reached_and_says_how_to_resume(stops):
    code, text = stops["sigint"]
    run_dir = stops["run_dir"]
    assert code == 130, text[-3000:]
    assert "Traceback" not in text
    step = _stopped_at(text, "SIGINT", run_dir)
    assert 1 <= step < 100  # not a periodic checkpoint (those are at 100, 200)
    assert "resume with: python -m pipelines.pretrain" in text
    # The rerun of the printed command resumed at that step.
    resumed = stops["rerun_resumed"]
    assert (int(resumed.group(1)), int(resumed.group(2))) == (step, step)
    assert stops["rerun_first_step"] > step


def test_sigterm_takes_the_same_path_with_status_143(stops):
    code, text = stops["sigterm"]
    assert code == 143, text[-3000:]
    step = _stopped_at(text, "SIGTERM", stops["run_dir"])
    assert step >= stops["rerun_first_step"]
    assert _intact(f"{stops['run_dir']}/checkpoints/ckpt-{step}")


def test_a_second_ctrl_c_exits_at_once(stops):
    code, text = stops["double"]
    assert code == 130, text[-3000:]
    assert "second SIGINT: exiting at once without saving" in text
    assert "stopped by SIGINT" not in text
    assert not (stops["run_dir"] / "run.lock").exists()  # released on the way out


def test_stop_signals_note_the_first_and_exit_on_the_second():
    """The signal path in process (SIGTERM: a test runner may ignore SIGINT): the first signal is
    noted while the main thread is busy, the second runs the abort callbacks and exits 143."""
    from transfer_tf.training import signals

    exits, aborted = [], []
    before = signal.getsignal(signal.SIGTERM)
    with signals.StopSignals(on_abort=[lambda: aborted.append(True)], exit_fn=exits.append) as stop:
        assert stop.active
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 60
        while signals.requested() != signal.SIGTERM:
            assert time.time() < deadline, "the first SIGTERM was not noted"
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        while not exits:
            assert time.time() < deadline, "the second SIGTERM did not exit"
            time.sleep(0.01)
    assert exits == [143] and aborted == [True]
    assert signals.requested() is None and signal.getsignal(signal.SIGTERM) == before
