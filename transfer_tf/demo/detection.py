"""The demo's optional detection stage (`--set=demo.detection=true`): RetinaNet on the COCO-like
scenes' exact boxes, fine-tuned from the demo's pretrained backbone vs trained from scratch at the
same step budget, COCOeval AP50 of both in the report, and one val image with its detections drawn
(through the exported detection SavedModel and `pipelines.predict --draw_dir`).

Off by default: a ResNet detector at the smallest input (128 px) costs several minutes on 2 CPU
cores, beyond the demo's budget.

Example:
    configs = detection_configs(cfg, paths)      # {"detect_finetune": ..., "detect_scratch": ...}
    stages = demo_stages(cfg, paths)             # plan.plan_stages + these when demo.detection
"""

from __future__ import annotations

import copy
import os

from transfer_tf.config import ExperimentConfig
from transfer_tf.demo import downstream
from transfer_tf.demo.plan import DemoPaths, Stage, finetune_config, plan_stages, predict_image

DETECTION = downstream.DownstreamTask(
    name="detection",
    finetune_run="detect_finetune",
    scratch_run="detect_scratch",
    titles={
        "detect_finetune": "Detection, RetinaNet from the pretrained backbone (fpn,head -> all)",
        "detect_scratch": "Detection, RetinaNet from scratch, same budget",
    },
    evaluation="COCOeval on the COCO-like val split",
    export_title="Export the fine-tuned detector as a SavedModel",
    predict_title="Detect objects in one generated image through the SavedModel and draw them",
)
RUNS = DETECTION.runs

# Sizes of the detection runs (CPU): the smallest input, one-conv heads, a short budget.
# At 60 steps both runs stay near AP 0 on the demo data; at 150 both detect (AP50 ~0.85). At
# 0.01 without a warmup of the `all` phase, ResNet-50 at batch 8 diverged once in three runs.
# The LR is per 256 images (SGD: x BATCH/256): 0.16 is the measured 0.005 at batch 8.
IMAGE_SIZE, BATCH, STEPS, BASE_LEARNING_RATE = 128, 8, 150, 0.16


def detection_configs(cfg: ExperimentConfig, paths: DemoPaths) -> dict[str, ExperimentConfig]:
    """The two detection experiments on the COCO-like shards (the demo's finetune data)."""
    base = copy.deepcopy(finetune_config(cfg, paths))
    base.transfer.task = "detection"
    base.transfer.preset = ""
    base.train.global_batch_size = BATCH
    base.train.xla = False  # the XLA probe times classifiers
    base.detection.image_size = IMAGE_SIZE
    base.data.image_size = IMAGE_SIZE  # one input size (a detection run reads detection's)
    base.detection.head_convs = 1
    base.detection.max_boxes = 2 * cfg.demo.objects_per_image[1]
    return downstream.finetune_and_scratch_configs(
        base, cfg.name, DETECTION, STEPS, BASE_LEARNING_RATE
    )


def drawn_image(paths: DemoPaths) -> str:
    """The predicted val image with its boxes drawn (`predict --draw_dir=plots/`)."""
    return os.path.join(paths.plots, os.path.basename(predict_image(paths))[:-4] + ".png")


def demo_stages(cfg: ExperimentConfig, paths: DemoPaths) -> list[Stage]:
    """The demo's stages (`plan.plan_stages`), followed by the detection ones when
    `demo.detection` is on."""
    stages = plan_stages(cfg, paths)
    return stages + detection_stages(paths) if cfg.demo.detection else stages


def detection_stages(paths: DemoPaths) -> list[Stage]:
    """Train, evaluate (COCOeval), export and predict-and-draw, in order."""
    return downstream.downstream_stages(paths, DETECTION, draw_dir=paths.plots)


def report_lines(paths: DemoPaths, read_json) -> list[str]:
    """The report's detection section: AP/AP50/AP75 per run and the drawn image."""
    columns = {"AP": "AP", "AP50": "AP50", "AP75": "AP75"}
    lines = downstream.runs_table(paths, read_json, DETECTION, columns)
    if lines is None:
        return ["Not run (see the stage table)."]
    lines += [
        "",
        f"Both runs train {STEPS} steps of batch {BATCH} at {IMAGE_SIZE} px; COCOeval on the "
        "COCO-like val split, boxes in original image pixels. The demo's classes differ in colour, "
        "which a detector learns from scratch about as fast as from the pretrained backbone; "
        "`pipelines/benchmark_detection.py` uses classes that share colours, where the "
        "pretrained backbone leads (BENCHMARKS.md).",
    ]
    prediction = read_json(downstream.predict_output(paths, DETECTION))
    if prediction and prediction.get("detections"):
        found = prediction["detections"][0]["detections"]
        names = ", ".join(f"{d['class']} {d['score']:.2f}" for d in found) or "none"
        lines += ["", f"Detections (score >= 0.3) in the first val image: {names}."]
    if os.path.exists(drawn_image(paths)):
        lines += ["", f"![detections]({os.path.relpath(drawn_image(paths), paths.work_dir)})"]
    return lines
