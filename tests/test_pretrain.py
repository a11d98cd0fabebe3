"""pipelines/pretrain.py and pipelines/evaluate.py as real subprocesses on tiny TFRecords."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from binary_harness import run_cases
from tiny_shards import CLASSES, write_shards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_shards(str(d / "train"), 64, 2, seed=0)
    write_shards(str(d / "validation"), 16, 1, seed=1)
    text = f"""
name: tiny
seed: 3
deterministic: true
data:
  train_pattern: {d}/train-*
  eval_pattern: {d}/validation-*
  num_classes: {CLASSES}
  label_offset: 1
  num_train_examples: 64
  num_eval_examples: 16
  image_size: 32
  shuffle_buffer: 64
  cycle_length: 2
model:
  name: resnet10
train:
  global_batch_size: 8
  train_steps: 16
  base_learning_rate: 0.2
  warmup_epochs: 0.25
  label_smoothing: 0.1
  strategy: one_device
  checkpoint_every_steps: 4
  log_every_steps: 4
  eval_every_epochs: 1
  checkpoint_input: true
"""
    path = d / "tiny.yaml"
    path.write_text(text)
    return str(path)


def _cmd(config, model_dir, *extra):
    return [
        sys.executable,
        "-m",
        "pipelines.pretrain",
        f"--config={config}",
        f"--model_dir={model_dir}",
        *extra,
    ]


def _run(cmd, timeout=300):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _final_loss(stderr: str) -> float:
    match = re.findall(r"done: \{'loss': ([0-9.eE+-]+)", stderr)
    assert match, stderr[-2000:]
    return float(match[-1])


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(config_file, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    # The uninterrupted reference and the run to kill start together (separate model dirs).
    straight = subprocess.Popen(
        _cmd(config_file, tmp_path / "straight"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(config_file, run_dir),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    saved = None
    while time.time() < deadline and proc.poll() is None:
        saved = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
        if saved and int(saved.rsplit("-", 1)[1]) >= 4:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).rsplit("-", 1)[1])
    assert 4 <= killed_at < 16
    _, straight_err = straight.communicate(timeout=300)
    assert straight.returncode == 0, straight_err[-2000:]
    want = _final_loss(straight_err)

    resumed = _run(_cmd(config_file, run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {killed_at}" in resumed.stderr
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("ckpt-16")
    # Deterministic ops + the checkpointed input iterator: the resumed run is the same run.
    assert _final_loss(resumed.stderr) == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert "eval at step 16" in resumed.stderr

    # The evaluate binary: a directory that is not a run is a one-line error; the run evaluates.
    not_a_run, ev = run_cases(
        "pipelines.evaluate:run",
        [[f"--model_dir={tmp_path / 'empty'}"], [f"--model_dir={run_dir}"]],
        env=env,
    )
    assert not_a_run.returncode == 2 and "no config.yaml" in not_a_run.stderr, not_a_run.stderr
    assert ev.returncode == 0, ev.stderr[-2000:]
    metrics = json.loads((run_dir / "eval_metrics.json").read_text())
    assert metrics["num_examples"] == 16 and 0.0 <= metrics["top_1_accuracy"] <= 1.0
    assert metrics["checkpoint"].endswith("ckpt-16")
    assert json.loads(ev.stdout.strip().splitlines()[-1])["num_examples"] == 16


BAD_FLAGS = {
    "tpu": (["--strategy=tpu", "--mixed_precision=bfloat16"], "error: --strategy=tpu: no TPU"),
    "unknown_key": (
        ["--set=train.optimzer=sgd"],
        "error: unknown config key 'train.optimzer'; did you mean 'optimizer'",
    ),
    "bad_enum": (["--mixed_precision=fp8"], "error: flag --mixed_precision=fp8"),
    "zero_batch": (
        ["--set=train.global_batch_size=0"],
        "error: config key 'train.global_batch_size'",
    ),
}


@pytest.fixture(scope="module")
def bad_runs(config_file, tmp_path_factory):
    """The pretrain binary on each bad command line, all in one harness process."""
    tmp = tmp_path_factory.mktemp("bad")
    cases = {
        name: ["--config=" + config_file, f"--model_dir={tmp / name}", *extra]
        for name, (extra, _) in BAD_FLAGS.items()
    }
    cases["no_model_dir"] = ["--config=configs/demo.yaml"]
    # A run with a checkpoint, resumed with another learning rate (issue 13 item 8).
    from transfer_tf.config import load_config, save_config

    changed = tmp / "changed_config"
    changed.mkdir()
    save_config(load_config(config_file), str(changed / "config.yaml"))
    ckpt = tf.train.Checkpoint(step=tf.Variable(4, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, str(changed / "checkpoints"), 1).save(checkpoint_number=4)
    cases["changed_config"] = [
        "--config=" + config_file,
        f"--model_dir={changed}",
        "--set=train.base_learning_rate=0.3",
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.pop("TPU_NAME", None)
    return dict(
        zip(cases, run_cases("pipelines.pretrain:run", list(cases.values()), env=env), strict=True)
    )


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flags_fail_in_one_line(bad_runs, case):
    result, message = bad_runs[case], BAD_FLAGS[case][1]
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-1500:]
    assert "Traceback" not in result.stderr


def test_resume_with_a_changed_config_names_the_keys(bad_runs):
    result = bad_runs["changed_config"]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-1500:]
    assert "train.base_learning_rate: 0.2 -> 0.3" in lines[0]
    assert "--allow_config_change" in lines[0]


def test_missing_model_dir(bad_runs):
    result = bad_runs["no_model_dir"]
    assert result.returncode == 2 and "error: --model_dir is required" in result.stderr
