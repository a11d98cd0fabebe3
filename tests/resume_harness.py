"""The kill-and-resume steps the fine-tuning resume tests share (classification, detection,
segmentation): a two-phase `pipelines.finetune` run in a child process, SIGKILLed once it has
checkpointed inside its second phase, then rerun to the end.

Example:
    cmd, model_dir = finetune_command(tmp_path, config, weights)
    kill_mid_phase_and_resume(cmd, model_dir, tmp_path / "first_run.log", weights, (2, 6), "all")
    printed, written = evaluate_in_process(model_dir, f"{shards}/train-*")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf
import yaml

from transfer_tf.config import ModelConfig
from transfer_tf.models.resnet import build_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def latest_step(model_dir: str) -> int:
    """The step of the run's latest checkpoint (0 before the first)."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def backbone_weights(tmp_path) -> str:
    """The backbone source: a ResNet-10 classifier's Keras weights (its head is not restored)."""
    weights = str(tmp_path / "pretrained.weights.h5")
    build_classifier(ModelConfig(name="resnet10"), 5).save_weights(weights)
    return weights


def finetune_command(tmp_path, config: dict, weights: str) -> tuple[list[str], str]:
    """`config` written as YAML under `tmp_path`, and the `pipelines.finetune` command line that
    trains it from `weights` into `tmp_path/run`; returns (command, model_dir)."""
    config_path = tmp_path / "finetune.yaml"
    config_path.write_text(yaml.safe_dump(config))
    model_dir = str(tmp_path / "run")
    cmd = [
        sys.executable,
        "-m",
        "pipelines.finetune",
        f"--config={config_path}",
        f"--init_checkpoint={weights}",
        f"--model_dir={model_dir}",
    ]
    return cmd, model_dir


def _kill_mid_phase(
    cmd: list[str], model_dir: str, log_path, after_step: int, deadline_s=300
) -> int:
    """Starts `cmd` (output into `log_path`) and SIGKILLs it once a checkpoint two steps past
    `after_step` (the first phase's length) exists, so the kill lands inside the second phase;
    returns the step of the last checkpoint. Fails the test if the run exits first or takes
    longer than `deadline_s`."""
    log = open(log_path, "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + deadline_s
    try:
        while latest_step(model_dir) < after_step + 2:
            if proc.poll() is not None:
                pytest.fail("exited before the kill: " + Path(log_path).read_text()[-3000:])
            assert time.time() < deadline, "no mid-phase checkpoint in time"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    return latest_step(model_dir)


def _rerun_resumes_in_phase_two(
    cmd: list[str], model_dir: str, phase_name: str, total_steps: int
) -> subprocess.CompletedProcess:
    """Reruns `cmd` to the end and checks it resumed inside phase 2/2 `phase_name` (phase 1 not
    rerun) and finished at `total_steps`; returns the finished process (stdout: its JSON)."""
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "phase 1/2" not in done.stderr  # the first phase is not rerun
    assert f"phase 2/2 '{phase_name}'" in done.stderr and "resuming from step" in done.stderr
    assert latest_step(model_dir) == total_steps
    assert json.loads(done.stdout.strip().splitlines()[-1])["global_step"] == total_steps
    return done


def kill_mid_phase_and_resume(
    cmd: list[str],
    model_dir: str,
    log_path,
    weights: str,
    phase_steps: tuple[int, int],
    second_phase: str,
    deadline_s=300,
) -> None:
    """Kills the first run of `cmd` inside its second phase (`phase_steps`: both phases'
    lengths; output into `log_path`), deletes the backbone source `weights`, and reruns it to the
    end: it must resume inside phase 2/2 `second_phase` from its checkpoint, not from the source
    (gone, so a rerun that read it again would fail)."""
    first, second = phase_steps
    killed_at = _kill_mid_phase(cmd, model_dir, log_path, first, deadline_s)
    assert first < killed_at < first + second  # inside the second phase
    os.remove(weights)
    _rerun_resumes_in_phase_two(cmd, model_dir, second_phase, first + second)


def evaluate_in_process(model_dir: str, eval_pattern: str) -> tuple[dict, dict]:
    """`pipelines.evaluate` on the finished run, in-process (`demo.inprocess.run_call`: a parsed
    copy of the binary's flags, so this run's --eval_pattern is not left behind for the next
    in-process evaluate in the worker). Returns (the metrics it printed, the metrics JSON it wrote
    into `model_dir`)."""
    from transfer_tf.demo.inprocess import run_call

    args = [f"--model_dir={model_dir}", f"--eval_pattern={eval_pattern}"]
    printed = json.loads(run_call("pipelines.evaluate", args))
    with open(os.path.join(model_dir, "eval_metrics.json")) as f:
        return printed, json.load(f)
