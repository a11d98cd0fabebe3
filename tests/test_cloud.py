"""Platform conventions (issue 33 item 3): AIP_* directories, `strategy: auto` on a TPU VM, the
replica count from the strategy, `$(NAME)` references in job specs, the one entry point, and the
install mode that keeps a machine's own TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from transfer_tf import cloud_env
from transfer_tf.config import load_config
from transfer_tf.distribute.cluster import ClusterInfo
from transfer_tf.distribute.preflight import check_distributed_config
from transfer_tf.errors import UsageError
from transfer_tf.training import strategy as strategy_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AIP = {
    "AIP_MODEL_DIR": "gs://b/out/model/",
    "AIP_CHECKPOINT_DIR": "gs://b/out/checkpoints/",
    "AIP_TENSORBOARD_LOG_DIR": "gs://b/out/logs/",
}


def test_flags_win_over_aip_variables_and_the_log_says_which(caplog):
    caplog.set_level("INFO")
    dirs = cloud_env.TRAINING_DIR_VARS
    assert cloud_env.output_dir("runs/x", "--model_dir", dirs, AIP) == ("runs/x", "--model_dir")
    assert "the flag wins over AIP_CHECKPOINT_DIR, AIP_MODEL_DIR" in caplog.text
    got = cloud_env.output_dir(None, "--model_dir", dirs, AIP)
    assert got == ("gs://b/out/checkpoints", "AIP_CHECKPOINT_DIR")
    assert "writing to gs://b/out/checkpoints from AIP_CHECKPOINT_DIR" in caplog.text
    only_model = {"AIP_MODEL_DIR": "gs://b/out/model/"}
    assert cloud_env.output_dir("", "--model_dir", dirs, only_model)[0] == "gs://b/out/model"
    got = cloud_env.output_dir(None, "--export_dir", cloud_env.EXPORT_DIR_VARS, AIP)
    assert got == ("gs://b/out/model", "AIP_MODEL_DIR")
    with pytest.raises(UsageError, match=r"^--model_dir is required \(or set AIP_CHECKPOINT_DIR"):
        cloud_env.output_dir(None, "--model_dir", dirs, {})


def test_summaries_go_where_vertex_tensorboard_reads():
    assert cloud_env.summary_dir("runs/x", AIP) == "gs://b/out/logs"
    assert cloud_env.summary_dir("runs/x", {}) == os.path.join("runs/x", "summaries")


def test_references_expand_as_kubernetes_does():
    env = {"BUCKET": "gs://b", "JOB_COMPLETION_INDEX": "1"}
    expand = cloud_env.expand_references
    assert expand("--model_dir=$(BUCKET)/runs/r50", env) == "--model_dir=gs://b/runs/r50"
    assert expand("--task_index=$(JOB_COMPLETION_INDEX)", env) == "--task_index=1"
    assert expand("$(UNSET)/x", env) == "$(UNSET)/x"  # kept as written, like kubelet
    assert expand("$$(BUCKET) $HOME", env) == "$(BUCKET) $HOME"


def test_auto_picks_a_tpu_when_this_host_has_tpu_chips(monkeypatch):
    assert strategy_lib.resolve_auto("", {}, tpu_chips=4, gpus=0) == "tpu"
    assert strategy_lib.resolve_auto("", {"TPU_NAME": "pod"}, tpu_chips=0) == "tpu"
    assert strategy_lib.resolve_auto("", {}, tpu_chips=0, gpus=2) == "mirrored"
    assert strategy_lib.resolve_auto("", {}, tpu_chips=0, gpus=1) == "one_device"
    # make_strategy("auto") takes the TPU path on a host with chips (and no TPU_NAME).
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(strategy_lib, "local_tpu_chips", lambda: 4)
    called = []
    monkeypatch.setattr(strategy_lib, "_tpu_strategy", lambda tpu: called.append(tpu) or "TPU")
    assert strategy_lib.make_strategy("auto") == "TPU" and called == [""]


def test_the_batch_is_checked_against_the_strategys_replicas_not_eight_per_host():
    cfg = load_config(
        os.path.join(REPO, "configs/demo.yaml"),
        ["train.strategy=tpu", "train.global_batch_size=12", "train.mixed_precision=bfloat16"],
    )
    check_distributed_config(cfg, ClusterInfo())  # a v5litepod-4 has 4 cores: 12 is fine
    four = SimpleNamespace(num_replicas_in_sync=4)
    assert strategy_lib.per_replica_batch_size(12, four) == 3
    with pytest.raises(UsageError, match="10 is not divisible by the 4 replicas"):
        strategy_lib.per_replica_batch_size(10, four)


def test_one_entry_point_names_the_jobs_on_a_bad_one(capsys):
    from pipelines.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["pipelines", "pretrian"])
    line = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in line
    assert line.startswith("error: unknown job 'pretrian'; usage: JOB [FLAGS...]")
    assert {"pretrain", "finetune", "evaluate", "export", "predict"} <= set(
        line.split("one of ")[1].split(", ")
    )


def _pip_dry_run(tmp_path, keep: str) -> subprocess.CompletedProcess:
    """pip resolving `pip install .` offline on a machine whose TensorFlow is 2.20.0 (a TPU VM's
    own build stands in: a dist-info that shadows this venv's TensorFlow)."""
    site = tmp_path / "site"
    info = site / "tensorflow-2.20.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorflow\nVersion: 2.20.0\n")
    env = dict(os.environ, PYTHONPATH=str(site), TRANSFER_TF_KEEP_TENSORFLOW=keep)
    report = tmp_path / f"report{keep}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index"]
    cmd += ["--no-build-isolation", "--quiet", "--report", str(report), "."]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    done.report = json.loads(report.read_text()) if report.exists() else None
    return done


def test_install_keeps_the_machines_tensorflow_with_the_keep_variable(tmp_path):
    pinned = _pip_dry_run(tmp_path, "")
    # The pin asks for 2.21.0 and would replace the machine's TensorFlow (offline: it cannot).
    assert pinned.returncode != 0 and "tensorflow==2.21.0" in pinned.stderr, pinned.stderr
    kept = _pip_dry_run(tmp_path, "1")
    assert kept.returncode == 0, kept.stderr
    installs = [item["metadata"] for item in kept.report["install"]]
    assert [m["name"] for m in installs] == ["transfer-tf"]  # nothing else, TensorFlow stays
    requires = installs[0]["requires_dist"]
    assert not any(r.split(";")[0].startswith("tensorflow=") for r in requires), requires
    assert "keras-cv==0.9.0" in requires
