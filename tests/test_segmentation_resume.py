"""A segmentation fine-tuning run (pipelines/finetune.py, transfer.task: segmentation) killed
mid-phase resumes in that phase from its checkpoint, finishes, and evaluates mIoU at the original
image size through pipelines/evaluate.py."""

import os

import pytest
from resume_harness import (
    backbone_weights,
    evaluate_in_process,
    finetune_command,
    kill_mid_phase_and_resume,
)

from transfer_tf.data.builders import build_coco
from transfer_tf.datagen.shapes import class_name, write_coco_like

HEAD_STEPS, ALL_STEPS = 2, 6


@pytest.mark.slow
def test_killed_segmentation_run_resumes(tmp_path):
    coco = write_coco_like(
        str(tmp_path / "raw"), num_images=8, category_ids=[1, 3, 7], image_size_range=(40, 64)
    )
    shards = str(tmp_path / "tfr")
    prefix = os.path.join(shards, "train")
    build_coco([coco.image_dir], coco.annotations_file, prefix, num_shards=2, include_masks=True)
    weights = backbone_weights(tmp_path)
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
    cmd, model_dir = finetune_command(tmp_path, config, weights)
    # Killed inside phase 2, then rerun without the backbone source: the checkpoint is used.
    kill_mid_phase_and_resume(
        cmd, model_dir, tmp_path / "first_run.log", weights, (HEAD_STEPS, ALL_STEPS), "all"
    )
    assert "Restored" in (tmp_path / "first_run.log").read_text()  # the backbone, strictly

    # pipelines/evaluate.py's segmentation job on the finished run, in-process: the metrics JSON
    # holds mIoU, pixel accuracy and one IoU per class of the class map, at original size.
    printed, written = evaluate_in_process(model_dir, f"{shards}/train-*")
    assert written["mIoU"] == printed["mIoU"] and 0.0 <= written["mIoU"] <= 1.0
    assert 0.0 < written["pixel_accuracy"] <= 1.0
    assert list(written["per_class_iou"]) == ["background", *(class_name(i) for i in range(3))]
    assert written["num_images"] == 8
