"""A detection fine-tuning run (pipelines/finetune.py, transfer.task: detection) killed mid-phase
resumes in that phase from its checkpoint, finishes, and evaluates with COCOeval."""

import os

import pytest
from resume_harness import (
    backbone_weights,
    evaluate_in_process,
    finetune_command,
    kill_mid_phase_and_resume,
)

from transfer_tf.data.builders import build_coco
from transfer_tf.datagen.shapes import write_coco_like

HEAD_STEPS, ALL_STEPS = 2, 8


@pytest.mark.slow
def test_killed_detection_run_resumes(tmp_path):
    coco = write_coco_like(
        str(tmp_path / "raw"), num_images=12, category_ids=[1, 3, 7], image_size_range=(96, 160)
    )
    shards = str(tmp_path / "tfr")
    build_coco([coco.image_dir], coco.annotations_file, os.path.join(shards, "train"), num_shards=2)
    weights = backbone_weights(tmp_path)
    config = {
        "seed": 0,
        "data": {
            "schema": "coco",
            "train_pattern": os.path.join(shards, "train-*"),
            "label_map_file": os.path.join(shards, "label_map.json"),
            "num_classes": 3,
            "num_train_examples": 12,
            "shuffle_buffer": 16,
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
            "task": "detection",
            "phases": [
                {"name": "heads", "trainable": "fpn,head", "steps": HEAD_STEPS,
                 "base_learning_rate": 0.01 * 256 / 2},  # 0.01 at batch 2
                {"name": "all", "trainable": "all", "steps": ALL_STEPS,
                 "base_learning_rate": 0.001 * 256 / 2},
            ],
        },
        "detection": {"image_size": 128, "max_boxes": 8, "head_convs": 1},
    }  # fmt: skip
    cmd, model_dir = finetune_command(tmp_path, config, weights)
    # Killed inside phase 2, then rerun without the backbone source: the checkpoint is used.
    kill_mid_phase_and_resume(
        cmd, model_dir, tmp_path / "first_run.log", weights, (HEAD_STEPS, ALL_STEPS), "all"
    )
    assert "Restored" in (tmp_path / "first_run.log").read_text()  # the backbone, strictly

    # pipelines/evaluate.py's detection job on the finished run: COCOeval into the metrics JSON.
    printed, written = evaluate_in_process(model_dir, f"{shards}/train-*")
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(written)
    assert written["AP50"] == printed["AP50"] and 0.0 <= written["AP"] <= 1.0
    assert written["num_images"] == 12
