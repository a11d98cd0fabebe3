"""pipelines/finetune.py end to end on real shards: killed mid-phase, rerun, resumes in that phase."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
import yaml

from transfer_tf.config import ModelConfig
from transfer_tf.data.builders import build_coco
from transfer_tf.datagen.shapes import write_coco_like
from transfer_tf.models.resnet import build_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_STEPS, FT_STEPS = 2, 10


def _latest_step(model_dir):
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_kill_mid_phase_then_resume(tmp_path):
    coco = write_coco_like(str(tmp_path / "raw"), num_images=24, category_ids=[1, 3, 7], seed=0)
    shards = str(tmp_path / "tfr")
    build_coco([coco.image_dir], coco.annotations_file, os.path.join(shards, "train"), num_shards=2)
    weights = str(tmp_path / "pretrained.weights.h5")
    build_classifier(ModelConfig(name="resnet10"), 5).save_weights(weights)
    config = {
        "seed": 0,
        "data": {
            "schema": "coco",
            "train_pattern": os.path.join(shards, "train-*"),
            "label_map_file": os.path.join(shards, "label_map.json"),
            "num_classes": 3,
            "num_train_examples": 24,
            "image_size": 32,
            "shuffle_buffer": 32,
        },
        "model": {"name": "resnet10"},
        "train": {
            "global_batch_size": 8,
            "strategy": "one_device",
            "checkpoint_every_steps": 1,
            "keep_checkpoints": 3,
            "log_every_steps": 1,
        },
        "transfer": {
            "phases": [
                # 0.1 and 0.01 at batch 8.
                {
                    "name": "probe",
                    "trainable": "head",
                    "steps": PROBE_STEPS,
                    "base_learning_rate": 3.2,
                },
                {
                    "name": "finetune",
                    "trainable": "all",
                    "steps": FT_STEPS,
                    "base_learning_rate": 0.32,
                },
            ]
        },
    }
    config_path = tmp_path / "ft.yaml"
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
    log = open(tmp_path / "first_run.log", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    try:
        while _latest_step(model_dir) < PROBE_STEPS + 2:
            if proc.poll() is not None:
                pytest.fail(
                    "exited before the kill: " + (tmp_path / "first_run.log").read_text()[-3000:]
                )
            assert time.time() < deadline, "no mid-phase checkpoint in time"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    killed_at = _latest_step(model_dir)
    assert PROBE_STEPS < killed_at < PROBE_STEPS + FT_STEPS  # inside the second phase

    # A rerun with a source that no longer exists: the checkpoint, not the source, is used.
    os.remove(weights)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "phase 1/2" not in done.stderr  # the probe phase is not rerun
    assert "phase 2/2 'finetune'" in done.stderr and "resuming from step" in done.stderr
    assert _latest_step(model_dir) == PROBE_STEPS + FT_STEPS
    assert json.loads(done.stdout.strip().splitlines()[-1])["global_step"] == PROBE_STEPS + FT_STEPS

    # pipelines/evaluate.py's job works on the fine-tuned run: multi-label metrics.
    from transfer_tf.training.evaluation import evaluate_run

    metrics = evaluate_run(model_dir, eval_pattern=os.path.join(shards, "train-*"))
    assert len(metrics["per_class_AP"]) == 3 and 0 <= metrics["mAP"] <= 1
    assert {"micro_F1", "macro_F1"} <= set(metrics)
