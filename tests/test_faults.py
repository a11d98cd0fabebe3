"""Faults a user meets, on the real binaries (issue 30): a damaged newest checkpoint, a full disk.

One tiny pretraining run (resnet10, 32 px, 6 steps, checkpoints at 2/4/6) is shared by the
module; each test works on a hard-linked copy of it (the binaries replace files by rename and
never write one in place, and damage is done by rewriting a file, so the copies stay
independent). A full disk is stood in for by a file size limit (`ulimit -f`: Python ignores
SIGXFSZ, so writes fail with EFBIG; DESIGN.md, "Faults, as a test meets them").
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
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
    - {{name: probe, trainable: head, steps: 2, learning_rate: 0.1}}
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
