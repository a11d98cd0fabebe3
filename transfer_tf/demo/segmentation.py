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

from transfer_tf.config import ExperimentConfig
from transfer_tf.demo import downstream
from transfer_tf.demo.plan import DemoPaths, Stage, finetune_config, predict_image

SEGMENTATION = downstream.DownstreamTask(
    name="segmentation",
    finetune_run="segment_finetune",
    scratch_run="segment_scratch",
    titles={
        "segment_finetune": "Segmentation, Semantic-FPN from the pretrained backbone "
        "(fpn,head -> all)",
        "segment_scratch": "Segmentation, Semantic-FPN from scratch, same budget",
    },
    evaluation="mIoU on the COCO-like val split, original size",
    export_title="Export the fine-tuned segmenter as a SavedModel",
    predict_title="Segment one generated image through the SavedModel and overlay its class map",
)
RUNS = SEGMENTATION.runs

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
    return downstream.finetune_and_scratch_configs(
        base, cfg.name, SEGMENTATION, STEPS, BASE_LEARNING_RATE
    )


def overlay_dir(paths: DemoPaths) -> str:
    return os.path.join(paths.plots, "segmentation")


def overlay_image(paths: DemoPaths) -> str:
    """The predicted val image with its class map overlaid (`predict --draw_dir`)."""
    name = os.path.basename(predict_image(paths))[:-4] + ".png"
    return os.path.join(overlay_dir(paths), name)


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
    return downstream.downstream_stages(paths, SEGMENTATION, draw_dir=overlay_dir(paths))


def report_lines(paths: DemoPaths, read_json) -> list[str]:
    """The report's segmentation section: mIoU and pixel accuracy per run, and the overlay."""
    columns = {"mIoU": "mIoU", "pixel_accuracy": "pixel accuracy"}
    lines = downstream.runs_table(paths, read_json, SEGMENTATION, columns)
    if lines is None:
        return ["Not run (see the stage table)."]
    lines += [
        "",
        f"Both runs train {STEPS} steps of batch {BATCH} at {IMAGE_SIZE} px; class maps from the "
        "COCO-like instance masks (background + one class per category), compared at each val "
        "image's original size.",
    ]
    prediction = read_json(downstream.predict_output(paths, SEGMENTATION))
    if prediction and prediction.get("segments"):
        found = prediction["segments"][0]["classes"]
        names = ", ".join(f"{c['class']} {100 * c['pixel_fraction']:.0f}%" for c in found)
        lines += ["", f"Classes in the first val image (share of pixels): {names or 'none'}."]
    if os.path.exists(overlay_image(paths)):
        lines += ["", f"![class map]({os.path.relpath(overlay_image(paths), paths.work_dir)})"]
    return lines
