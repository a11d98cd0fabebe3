"""The demo's optional segmentation stage (`--set=demo.segmentation=true`): Semantic-FPN on the
COCO-like scenes' exact instance masks, fine-tuned from the demo's pretrained backbone vs trained
from scratch at the same step budget, mIoU of both in the report, and one val image with its class
map overlaid (through the exported segmentation SavedModel and `pipelines.predict --draw_dir`).

With it on, the COCO-like shards are built with `--include_masks` (the flag Model Garden's builder
has too); nothing else of the demo changes. Off by default: several minutes more on 2 CPU cores.

Example:
    configs = segmentation_configs(cfg, paths)   # {"segment_finetune": ..., "segment_scratch": ...}
    stages = with_segmentation(cfg, paths, detection.demo_stages(cfg, paths))
"""

from __future__ import annotations

import copy
import dataclasses
import os

from transfer_tf.config import ExperimentConfig, PhaseConfig
from transfer_tf.demo.plan import (
    DemoPaths,
    Stage,
    coco_eval_pattern,
    finetune_config,
    predict_image,
)

RUNS = ("segment_finetune", "segment_scratch")
TITLES = {
    "segment_finetune": "Segmentation, Semantic-FPN from the pretrained backbone (fpn,head -> all)",
    "segment_scratch": "Segmentation, Semantic-FPN from scratch, same budget",
}
# Sizes of the segmentation runs (CPU): a small input and neck, a short budget. The LR is per 256
# images (SGD: x BATCH/256).
IMAGE_SIZE, BATCH, STEPS, BASE_LEARNING_RATE = 64, 8, 120, 0.32


def segmentation_configs(cfg: ExperimentConfig, paths: DemoPaths) -> dict[str, ExperimentConfig]:
    """The two segmentation experiments on the COCO-like shards (the demo's finetune data)."""
    base = copy.deepcopy(finetune_config(cfg, paths))
    base.transfer.task = "segmentation"
    base.transfer.preset = ""
    base.transfer.label_smoothing = 0.0  # a segmentation run reads none (config_unread)
    base.transfer.pos_weight = 1.0
    base.transfer.threshold = 0.5
    base.transfer.head_init, base.transfer.head_prior = "default", 0.0
    base.export = type(base.export)(max_image_pixels=base.export.max_image_pixels)
    base.model.dropout = 0.0
    base.data = dataclasses.replace(
        type(base.data)(),
        **{
            k: getattr(base.data, k)
            for k in ("train_pattern", "schema", "num_classes", "label_map_file",
                      "label_names_file", "num_train_examples", "num_eval_examples",
                      "random_flip", "shuffle_buffer", "num_parallel_calls")
        },
    )  # fmt: skip
    base.train.global_batch_size = BATCH
    base.train.xla = False  # the XLA probe times classifiers
    base.segmentation.image_size = IMAGE_SIZE
    base.segmentation.fpn_channels = 64
    base.segmentation.head_channels = 64
    base.segmentation.scale_jitter = (0.75, 1.5)
    base.segmentation.max_eval_size = max(cfg.demo.coco_image_size)
    heads = STEPS // 4
    finetune = copy.deepcopy(base)
    finetune.name = f"{cfg.name}_segment_finetune"
    finetune.transfer.phases = [
        PhaseConfig(
            name="heads",
            trainable="fpn,head",
            steps=heads,
            base_learning_rate=BASE_LEARNING_RATE,
            lr_schedule="constant",
            warmup_steps=heads // 5,
            frozen_batchnorm="train",
        ),
        PhaseConfig(
            name="all",
            trainable="all",
            steps=STEPS - heads,
            base_learning_rate=BASE_LEARNING_RATE,
            warmup_steps=STEPS // 10,
        ),
    ]
    scratch = copy.deepcopy(base)
    scratch.name = f"{cfg.name}_segment_scratch"
    scratch.transfer.phases = [
        PhaseConfig(
            name="scratch",
            trainable="all",
            steps=STEPS,
            base_learning_rate=BASE_LEARNING_RATE,
            warmup_steps=STEPS // 10,
        )
    ]
    return {"segment_finetune": finetune, "segment_scratch": scratch}


def export_dir(paths: DemoPaths) -> str:
    return os.path.join(paths.work_dir, "export_segmentation")


def overlay_dir(paths: DemoPaths) -> str:
    return os.path.join(paths.plots, "segmentation")


def overlay_image(paths: DemoPaths) -> str:
    """The predicted val image with its class map overlaid (`predict --draw_dir`)."""
    name = os.path.basename(predict_image(paths))[:-4] + ".png"
    return os.path.join(overlay_dir(paths), name)


def predict_output(paths: DemoPaths) -> str:
    return paths.metrics("predict_segmentation")


def with_segmentation(cfg: ExperimentConfig, paths: DemoPaths, stages: list[Stage]) -> list[Stage]:
    """`stages` (the demo's), plus the segmentation ones when `demo.segmentation` is on; then
    the COCO builder also writes the instance masks."""
    if not cfg.demo.segmentation:
        return stages
    out = []
    for stage in stages:
        if stage.name == "build_coco":
            calls = [
                (m, [*a, "--include_masks"]) if m == "pipelines.make_coco_tfrecords" else (m, a)
                for m, a in stage.calls
            ]
            stage = dataclasses.replace(stage, calls=calls)
        out.append(stage)
    return out + segmentation_stages(paths)


def segmentation_stages(paths: DemoPaths) -> list[Stage]:
    """Train, evaluate (mIoU), export and predict-and-overlay, in order."""
    d = paths
    stages = []
    for run in RUNS:
        args = [f"--config={d.config(run)}", f"--model_dir={d.run_dir(run)}"]
        if run == "segment_finetune":
            args.insert(1, f"--init_checkpoint={d.run_dir('pretrain')}")
        needs = ("build_coco", "pretrain") if run == "segment_finetune" else ("build_coco",)
        evaluate = [
            f"--model_dir={d.run_dir(run)}",
            f"--output={d.metrics(run)}",
            f"--eval_pattern={coco_eval_pattern(d)}",
        ]
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
                f"Evaluate the {run} run (mIoU on the COCO-like val split, original size)",
                [("pipelines.evaluate", evaluate)],
                needs=(run,),
                outputs=(d.metrics(run),),
            ),
        ]
    export = [f"--model_dir={d.run_dir('segment_finetune')}", f"--export_dir={export_dir(d)}"]
    predict = [
        f"--saved_model={export_dir(d)}",
        "--json",
        f"--draw_dir={overlay_dir(d)}",
        predict_image(d),
    ]
    return stages + [
        Stage(
            "export_segmentation",
            "Export the fine-tuned segmenter as a SavedModel",
            [("pipelines.export", export)],
            needs=("segment_finetune",),
        ),
        Stage(
            "predict_segmentation",
            "Segment one generated image through the SavedModel and overlay its class map",
            [("pipelines.predict", predict)],
            needs=("export_segmentation",),
            outputs=(predict_output(d),),
            stdout_file=predict_output(d),
        ),
    ]


def report_lines(paths: DemoPaths, read_json) -> list[str]:
    """The report's segmentation section: mIoU and pixel accuracy per run, and the overlay."""
    docs = {run: read_json(paths.metrics(run)) for run in RUNS}
    if not any(docs.values()):
        return ["Not run (see the stage table)."]
    lines = ["| run | mIoU | pixel accuracy | source |", "|---|---|---|---|"]
    for run in RUNS:
        doc = docs[run] or {}
        cells = [f"{doc[k]:.4f}" if k in doc else "–" for k in ("mIoU", "pixel_accuracy")]
        source = f"`metrics/{run}.json`" if docs[run] else "not run"
        lines.append(f"| {TITLES[run]} | " + " | ".join(cells) + f" | {source} |")
    lines += [
        "",
        f"Both runs train {STEPS} steps of batch {BATCH} at {IMAGE_SIZE} px; class maps from the "
        "COCO-like instance masks (background + one class per category), compared at each val "
        "image's original size.",
    ]
    prediction = read_json(predict_output(paths))
    if prediction and prediction.get("segments"):
        found = prediction["segments"][0]["classes"]
        names = ", ".join(f"{c['class']} {100 * c['pixel_fraction']:.0f}%" for c in found)
        lines += ["", f"Classes in the first val image (share of pixels): {names or 'none'}."]
    if os.path.exists(overlay_image(paths)):
        lines += ["", f"![class map]({os.path.relpath(overlay_image(paths), paths.work_dir)})"]
    return lines
