"""Preemption of a MultiWorkerMirrored run (issue 33 item 4): two `pipelines/pretrain.py` workers
on 127.0.0.1; SIGTERM to the non-chief worker only. Through TensorFlow's
PreemptionCheckpointHandler (`training.preemption`) both workers save the same step, both exit
143, the chief's checkpoint holds that step, and rerunning both commands resumes there and
finishes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import pytest
import tensorflow as tf
from test_multiworker import REPO, free_ports, overrides, write_shards

pytestmark = pytest.mark.slow
STEPS, SIGTERM_AT = 10, 3


class _Worker:
    """One worker process whose stderr lines are collected as they come."""

    def __init__(self, model_dir, pattern, hosts: str, index: int):
        cmd = [sys.executable, "-m", "pipelines.pretrain", f"--model_dir={model_dir}"]
        cmd += [f"--config={REPO}/configs/demo.yaml", *overrides(pattern)]
        cmd += [f"--set=train.train_steps={STEPS}", "--set=train.checkpoint_every_steps=1000"]
        cmd += ["--strategy=multi_worker_mirrored", f"--worker_hosts={hosts}"]
        cmd += [f"--task_index={index}"]
        env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CONFIG"}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.reached = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            step = re.search(rf"step (\d+)/{STEPS} loss", line)
            if step and int(step.group(1)) >= SIGTERM_AT:
                self.reached.set()

    def finish(self, timeout: float = 400) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._thread.join(timeout=30)
        return code, "".join(self.lines)


def _cluster(run_dir, pattern) -> list[_Worker]:
    hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    return [_Worker(run_dir, pattern, hosts, i) for i in range(2)]


def test_sigterm_to_one_worker_saves_the_same_step_on_all_and_the_rerun_resumes(tmp_path):
    pattern = write_shards(tmp_path)
    run_dir = tmp_path / "run"
    workers = _cluster(run_dir, pattern)
    try:
        assert workers[0].reached.wait(timeout=400), workers[0].finish(1)[1][-3000:]
        workers[1].proc.send_signal(signal.SIGTERM)  # the platform stops one VM
        results = [w.finish() for w in workers]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
    steps = []
    for code, text in results:
        assert code == 143, text[-3000:]
        match = re.search(
            r"^stopped by SIGTERM at global step (\d+); checkpoint: (\S+)$", text, re.M
        )
        assert match, text[-3000:]
        steps.append(int(match.group(1)))
        assert match.group(2) == f"{run_dir}/checkpoints/ckpt-{match.group(1)}"
    assert steps[0] == steps[1] and SIGTERM_AT <= steps[0] < STEPS, steps
    assert "Traceback" not in results[0][1] + results[1][1]
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert latest == f"{run_dir}/checkpoints/ckpt-{steps[0]}"  # only the chief writes there

    reruns = _cluster(run_dir, pattern)
    done = [w.finish() for w in reruns]
    for code, text in done:
        assert code == 0, text[-3000:]
        assert f"at step {steps[0]}" in text and "resumed from" in text, text[-3000:]
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith(f"ckpt-{STEPS}")
