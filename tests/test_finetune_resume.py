"""pipelines/finetune.py end to end on real shards: killed mid-phase, rerun, resumes in that phase."""

import os

import pytest
from resume_harness import (
    backbone_weights,
    finetune_command,
    kill_mid_phase_and_resume,
)

from transfer_tf.data.builders import build_coco
from transfer_tf.datagen.shapes import write_coco_like

PROBE_STEPS, FT_STEPS = 2, 10


@pytest.mark.slow
def test_kill_mid_phase_then_resume(tmp_path):
    coco = write_coco_like(str(tmp_path / "raw"), num_images=24, category_ids=[1, 3, 7], seed=0)
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
    cmd, model_dir = finetune_command(tmp_path, config, weights)
    # Killed inside phase 2, then rerun without the backbone source: the checkpoint is used.
    kill_mid_phase_and_resume(
        cmd,
        model_dir,
        tmp_path / "first_run.log",
        weights,
        (PROBE_STEPS, FT_STEPS),
        "finetune",
        deadline_s=240,
    )

    # pipelines/evaluate.py's job works on the fine-tuned run: multi-label metrics.
    from transfer_tf.training.evaluation import evaluate_run

    metrics = evaluate_run(model_dir, eval_pattern=os.path.join(shards, "train-*"))
    assert len(metrics["per_class_AP"]) == 3 and 0 <= metrics["mAP"] <= 1
    assert {"micro_F1", "macro_F1"} <= set(metrics)
