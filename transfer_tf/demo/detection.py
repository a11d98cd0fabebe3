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

from transfer_tf.config import ExperimentConfig, PhaseConfig
from transfer_tf.demo.plan import (
    DemoPaths,
    Stage,
    coco_eval_pattern,
    finetune_config,
    plan_stages,
    predict_image,
)

RUNS = ("detect_finetune", "detect_scratch")
TITLES = {
    "detect_finetune": "Detection, RetinaNet from the pretrained backbone (fpn,head -> all)",
    "detect_scratch": "Detection, RetinaNet from scratch, same budget",
}
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
    heads = STEPS // 4
    finetune = copy.deepcopy(base)
    finetune.name = f"{cfg.name}_detect_finetune"
    finetune.transfer.phases = [
        PhaseConfig(
            name="heads",
            trainable="fpn,head",
            steps=heads,
            base_learning_rate=BASE_LEARNING_RATE,
            lr_schedule="constant",
            warmup_steps=heads // 5,
            # Batch-statistics BN, as in the `all` phase (BENCHMARKS.md, detection transfer).
            frozen_batchnorm="train",
        ),
        PhaseConfig(
            name="all",
            trainable="all",
            steps=STEPS - heads,
            base_learning_rate=BASE_LEARNING_RATE,
            warmup_steps=STEPS // 10,  # a fresh optimizer on newly unfrozen layers
        ),
    ]
    scratch = copy.deepcopy(base)
    scratch.name = f"{cfg.name}_detect_scratch"
    scratch.transfer.phases = [
        PhaseConfig(
            name="scratch",
            trainable="all",
            steps=STEPS,
            base_learning_rate=BASE_LEARNING_RATE,
            warmup_steps=STEPS // 10,
        )
    ]
    return {"detect_finetune": finetune, "detect_scratch": scratch}


def export_dir(paths: DemoPaths) -> str:
    return os.path.join(paths.work_dir, "export_detection")


def drawn_image(paths: DemoPaths) -> str:
    """The predicted val image with its boxes drawn (`predict --draw_dir=plots/`)."""
    return os.path.join(paths.plots, os.path.basename(predict_image(paths))[:-4] + ".png")


def predict_output(paths: DemoPaths) -> str:
    return paths.metrics("predict_detection")


def demo_stages(cfg: ExperimentConfig, paths: DemoPaths) -> list[Stage]:
    """The demo's stages (`plan.plan_stages`), followed by the detection ones when
    `demo.detection` is on."""
    stages = plan_stages(cfg, paths)
    return stages + detection_stages(paths) if cfg.demo.detection else stages


def detection_stages(paths: DemoPaths) -> list[Stage]:
    """Train, evaluate (COCOeval), export and predict-and-draw, in order."""
    d = paths
    stages = []
    for run in RUNS:
        args = [f"--config={d.config(run)}", f"--model_dir={d.run_dir(run)}"]
        if run == "detect_finetune":
            args.insert(1, f"--init_checkpoint={d.run_dir('pretrain')}")
        needs = ("build_coco", "pretrain") if run == "detect_finetune" else ("build_coco",)
        stages += [
            Stage(
                run,
                TITLES[run],
                [("pipelines.finetune", args)],
                needs=needs,
                outputs=(os.path.join(d.run_dir(run), "config.yaml"),),
            ),
            Stage(
                f"evaluate_{run}",
                f"Evaluate the {run} run (COCOeval on the COCO-like val split)",
                [
                    (
                        "pipelines.evaluate",
                        [
                            f"--model_dir={d.run_dir(run)}",
                            f"--output={d.metrics(run)}",
                            f"--eval_pattern={coco_eval_pattern(d)}",
                        ],
                    )
                ],
                needs=(run,),
                outputs=(d.metrics(run),),
            ),
        ]
    stages += [
        Stage(
            "export_detection",
            "Export the fine-tuned detector as a SavedModel",
            [
                (
                    "pipelines.export",
                    [
                        f"--model_dir={d.run_dir('detect_finetune')}",
                        f"--export_dir={export_dir(d)}",
                    ],
                )
            ],
            needs=("detect_finetune",),
        ),
        Stage(
            "predict_detection",
            "Detect objects in one generated image through the SavedModel and draw them",
            [
                (
                    "pipelines.predict",
                    [
                        f"--saved_model={export_dir(d)}",
                        "--json",
                        f"--draw_dir={d.plots}",
                        predict_image(d),
                    ],
                )
            ],
            needs=("export_detection",),
            outputs=(predict_output(d),),
            stdout_file=predict_output(d),
        ),
    ]
    return stages


def report_lines(paths: DemoPaths, read_json) -> list[str]:
    """The report's detection section: AP/AP50/AP75 per run and the drawn image."""
    docs = {run: read_json(paths.metrics(run)) for run in RUNS}
    if not any(docs.values()):
        return ["Not run (see the stage table)."]
    lines = ["| run | AP | AP50 | AP75 | source |", "|---|---|---|---|---|"]
    for run in RUNS:
        doc = docs[run] or {}
        cells = [f"{doc[k]:.4f}" if k in doc else "–" for k in ("AP", "AP50", "AP75")]
        source = f"`metrics/{run}.json`" if docs[run] else "not run"
        lines.append(f"| {TITLES[run]} | " + " | ".join(cells) + f" | {source} |")
    lines += [
        "",
        f"Both runs train {STEPS} steps of batch {BATCH} at {IMAGE_SIZE} px; COCOeval on the "
        "COCO-like val split, boxes in original image pixels. The demo's classes differ in colour, "
        "which a detector learns from scratch about as fast as from the pretrained backbone; "
        "`pipelines/benchmark_detection.py` uses classes that share colours, where the "
        "pretrained backbone leads (BENCHMARKS.md).",
    ]
    prediction = read_json(predict_output(paths))
    if prediction and prediction.get("detections"):
        found = prediction["detections"][0]["detections"]
        names = ", ".join(f"{d['class']} {d['score']:.2f}" for d in found) or "none"
        lines += ["", f"Detections (score >= 0.3) in the first val image: {names}."]
    if os.path.exists(drawn_image(paths)):
        lines += ["", f"![detections]({os.path.relpath(drawn_image(paths), paths.work_dir)})"]
    return lines
