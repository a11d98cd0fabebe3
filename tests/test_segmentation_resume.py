"""A segmentation fine-tuning run (pipelines/finetune.py, transfer.task: segmentation) killed
mid-phase resumes in that phase from its checkpoint, finishes, and evaluates mIoU at the original
image size through pipelines/evaluate.py."""

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
from transfer_tf.datagen.shapes import class_name, write_coco_like
from transfer_tf.models.resnet import build_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD_STEPS, ALL_STEPS = 2, 6


def _latest_step(model_dir):
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_killed_segmentation_run_resumes(tmp_path):
    coco = write_coco_like(
        str(tmp_path / "raw"), num_images=8, category_ids=[1, 3, 7], image_size_range=(40, 64)
    )
    shards = str(tmp_path / "tfr")
    prefix = os.path.join(shards, "train")
    build_coco([coco.image_dir], coco.annotations_file, prefix, num_shards=2, include_masks=True)
    weights = str(tmp_path / "pretrained.weights.h5")
    build_classifier(ModelConfig(name="resnet10"), 5).save_weights(weights)
    config = {
        "seed": 0,
        "data": {
            "schema": "coco",
            "train_pattern": os.path.join(shards, "train-*"),
            "label_map_file": os.path.join(shards, "label_map.json"),
            "num_classes": 3,
            "num_train_examples": 8,
            "shuffle_buffer": 8,
        },
        "model": {"name": "resnet10"},
        "train": {
            "global_batch_size": 2,
            "strategy": "one_device",
            "checkpoint_every_steps": 1,
            "keep_checkpoints": 3,
            "log_every_steps": 1,
        },
        "transfer": {
            "task": "segmentation",
            "phases": [
                {"name": "heads", "trainable": "fpn,head", "steps": HEAD_STEPS,
                 "base_learning_rate": 0.01 * 256 / 2},
                {"name": "all", "trainable": "all", "steps": ALL_STEPS,
                 "base_learning_rate": 0.001 * 256 / 2},
            ],
        },
        "segmentation": {"image_size": 64, "fpn_channels": 32, "head_channels": 32,
                         "max_eval_size": 64},
    }  # fmt: skip
    config_path = tmp_path / "seg.yaml"
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
    deadline = time.time() + 300
    try:
        while _latest_step(model_dir) < HEAD_STEPS + 2:
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
    assert HEAD_STEPS < killed_at < HEAD_STEPS + ALL_STEPS  # inside the second phase
    assert "Restored" in (tmp_path / "first_run.log").read_text()  # the backbone, strictly

    # The rerun continues from the checkpoint (the source is gone: it is not read again).
    os.remove(weights)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "phase 1/2" not in done.stderr
    assert "phase 2/2 'all'" in done.stderr and "resuming from step" in done.stderr
    assert _latest_step(model_dir) == HEAD_STEPS + ALL_STEPS
    assert json.loads(done.stdout.strip().splitlines()[-1])["global_step"] == HEAD_STEPS + ALL_STEPS

    # pipelines/evaluate.py's segmentation job on the finished run, in-process: the metrics JSON
    # holds mIoU, pixel accuracy and one IoU per class of the class map, at original size.
    from transfer_tf.demo.inprocess import run_call

    args = [f"--model_dir={model_dir}", f"--eval_pattern={shards}/train-*"]
    printed = json.loads(run_call("pipelines.evaluate", args))
    written = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
    assert written["mIoU"] == printed["mIoU"] and 0.0 <= written["mIoU"] <= 1.0
    assert 0.0 < written["pixel_accuracy"] <= 1.0
    assert list(written["per_class_iou"]) == ["background", *(class_name(i) for i in range(3))]
    assert written["num_images"] == 8
