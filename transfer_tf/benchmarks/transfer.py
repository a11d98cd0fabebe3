"""Does transfer work? Pretrained + schedule vs scratch vs linear probe at an equal step budget.

On the project's own generated data (`datagen.shapes`): pretrain a ResNet on the ImageNet-like
set (shape x colour classes), then train the COCO-like multi-label task (scenes composed of the
same vocabulary) three ways with the same number of steps, batch and data:

  pretrained_schedule  backbone from the pretraining run, LP-FT schedule (head, then all)
  scratch              random initialisation, everything trains (cosine, warmup)
  linear_probe         backbone from the pretraining run, only the head trains

Each run is a real `run_finetuning` on TFRecords written by the builders and read by the input
pipeline; the result holds every run's mAP / F1 on the COCO-like val split.

Example:
    result = compare_transfer("/tmp/bench_transfer", BenchmarkSize(image_size=48))
    result["runs"]["pretrained_schedule"]["mAP"] > result["runs"]["scratch"]["mAP"]
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import keras
import tensorflow as tf
from absl import logging

from transfer_tf.config import ExperimentConfig, config_from_dict
from transfer_tf.data.builders import build_coco, build_imagenet
from transfer_tf.datagen import raw_layouts, shapes
from transfer_tf.datagen.raw_layouts import ImageNetLike
from transfer_tf.training.schedules import base_learning_rate_for

RUNS = ("pretrained_schedule", "scratch", "linear_probe")
# Real COCO-style category ids with gaps; vocabulary class i is category CATEGORY_IDS[i].
CATEGORY_IDS = (1, 3, 4, 7, 9, 13, 18, 22, 25, 31, 35, 41)


@dataclass(frozen=True)
class BenchmarkSize:
    """Sizes of the comparison (defaults: ~15 min on 2 CPU cores)."""

    model: str = "resnet18"
    image_size: int = 48
    pretrain_classes: int = 12
    pretrain_per_class: int = 60
    pretrain_steps: int = 600
    pretrain_val_per_class: int = 5
    coco_classes: int = 8
    coco_train_images: int = 400
    coco_val_images: int = 200
    budget_steps: int = 200  # every transfer run gets exactly this many steps
    batch_size: int = 32
    # Effective (absolute) SGD learning rates at batch_size, as measured; the configs get them
    # per 256 images (`base_learning_rate_for`).
    head_lr: float = 0.5
    finetune_lr_factor: float = 0.1
    scratch_lr: float = 0.2
    mixed_precision: str = "auto"
    xla: bool | str = "auto"  # measured per machine (training.autotune), as the shipped configs
    seed: int = 0

    def raw_image_size_range(self) -> tuple[int, int]:
        """Sides of the generated images of both sets: `image_size` to twice it."""
        return (self.image_size, 2 * self.image_size)


def build_imagenet_shards(tree: ImageNetLike, out_dir: str, seed: int) -> None:
    """The benchmarks' ImageNet-layout shards: `tree` (a generated raw dump) through the real
    builder, 4 train shards and 1 validation shard."""
    build_imagenet(
        tree.root,
        out_dir,
        train_shards=4,
        validation_shards=1,
        validation_labels_file=tree.val_labels_file,
        synset_names_file=tree.synset_names_file,
        seed=seed,
    )


def is_built(folder: str, *manifests: str) -> bool:
    """Whether the builders finished `folder`: every one of its `manifests` exists. They write
    label files first and their manifests last (atomically), so a folder without them is a build
    that was stopped partway, to build again rather than reuse."""
    return all(tf.io.gfile.exists(os.path.join(folder, name)) for name in manifests)


IMAGENET_MANIFESTS = ("manifest.json",)
COCO_MANIFESTS = ("manifest-train.json", "manifest-val.json")


def write_coco_like_split(
    raw_dir: str,
    output_prefix: str,
    num_categories: int,
    image_size_range: tuple[int, int],
    num_images: int,
    seed: int,
    first_image_id: int = 1,
    include_masks: bool = False,
) -> None:
    """One COCO-like split: `num_images` generated scenes of the first `num_categories` of
    `CATEGORY_IDS`, sides in `image_size_range`, under `raw_dir`, through the real COCO builder
    into `output_prefix-*` (2 shards; `include_masks`: with the instance masks). Each scene is
    drawn from (seed, index), so a smaller split is the larger one's first scenes."""
    coco = shapes.write_coco_like(
        raw_dir,
        num_images=num_images,
        category_ids=list(CATEGORY_IDS[:num_categories]),
        seed=seed,
        image_size_range=image_size_range,
        first_image_id=first_image_id,
    )
    build_coco([coco.image_dir], coco.annotations_file, output_prefix, num_shards=2,
               include_masks=include_masks)  # fmt: skip


def coco_like_scenes(
    work_dir: str,
    num_categories: int,
    image_size_range: tuple[int, int],
    train_images: int,
    val_images: int,
    seed: int,
    include_masks: bool = False,
) -> str:
    """The train (`seed`) and val (`seed + 1`, ids from 100001) COCO-like splits under
    `work_dir/raw/coco_<split>` and their shards under `work_dir/tfrecords/coco`, built once (a
    finished build is reused). Returns the shard folder. `include_masks`: shards with the
    instance masks, in `tfrecords/coco_masks` (the same raw scenes, beside the unmasked ones)."""
    coco_out = os.path.join(work_dir, "tfrecords", "coco_masks" if include_masks else "coco")
    if not is_built(coco_out, *COCO_MANIFESTS):
        for split, n, split_seed, first in (
            ("train", train_images, seed, 1),
            ("val", val_images, seed + 1, 100_001),
        ):
            write_coco_like_split(
                os.path.join(work_dir, "raw", f"coco_{split}"),
                os.path.join(coco_out, split),
                num_categories,
                image_size_range,
                n,
                split_seed,
                first,
                include_masks,
            )
    return coco_out


def prepare_data(work_dir: str, size: BenchmarkSize) -> dict[str, str]:
    """Generates the raw sets and their shards once; later calls reuse finished ones (same
    seed). Returns {"imagenet": shard dir, "coco": shard dir, "imagenet_train_raw": the raw
    ImageNet-like train tree (`<wnid>/<file>` inside), "coco_train_raw": the raw COCO-like
    train images}: where this function writes them, whether or not this call wrote them."""
    raw = os.path.join(work_dir, "raw")
    inet_out = os.path.join(work_dir, "tfrecords", "imagenet")
    if not is_built(inet_out, *IMAGENET_MANIFESTS):
        inet = shapes.write_imagenet_like(
            os.path.join(raw, "imagenet"),
            num_classes=size.pretrain_classes,
            train_per_class=size.pretrain_per_class,
            val_per_class=size.pretrain_val_per_class,
            image_size_range=size.raw_image_size_range(),
            seed=size.seed,
        )
        build_imagenet_shards(inet, inet_out, size.seed)
    coco_out = coco_like_scenes(
        work_dir,
        size.coco_classes,
        size.raw_image_size_range(),
        size.coco_train_images,
        size.coco_val_images,
        size.seed,
    )
    return {
        "imagenet": inet_out,
        "coco": coco_out,
        "imagenet_train_raw": os.path.join(raw, "imagenet", raw_layouts.IMAGENET_TRAIN_DIR),
        "coco_train_raw": os.path.join(raw, "coco_train", raw_layouts.COCO_IMAGE_DIR),
    }


def _base(size: BenchmarkSize) -> dict:
    return {
        "seed": size.seed,
        "model": {"name": size.model},
        "train": {
            "global_batch_size": size.batch_size,
            "strategy": "one_device",
            "mixed_precision": size.mixed_precision,
            "xla": size.xla,
            "checkpoint_every_steps": 10_000,
            "log_every_steps": 50,
            "eval_every_epochs": 0,
        },
    }


def pretrain_config(size: BenchmarkSize, imagenet_dir: str) -> ExperimentConfig:
    data = {
        "schema": "classification",
        "train_pattern": os.path.join(imagenet_dir, "train-*"),
        "num_classes": size.pretrain_classes,
        "label_offset": 1,
        "num_train_examples": size.pretrain_classes * size.pretrain_per_class,
        "image_size": size.image_size,
        "crop_area_range": [0.25, 1.0],
        "shuffle_buffer": 1000,
    }
    cfg = _base(size)
    cfg["data"] = data
    cfg["train"].update(
        train_steps=size.pretrain_steps,
        base_learning_rate=0.2 * 256 / size.batch_size,  # peak 0.2 at this batch
        warmup_epochs=1.0,
        label_smoothing=0.0,
        weight_decay=5e-5,
    )
    return config_from_dict(cfg)


def transfer_config(size: BenchmarkSize, coco_dir: str, run: str) -> ExperimentConfig:
    cfg = _base(size)
    cfg["data"] = {
        "schema": "coco",
        "train_pattern": os.path.join(coco_dir, "train-*"),
        "eval_pattern": os.path.join(coco_dir, "val-*"),
        "label_map_file": os.path.join(coco_dir, "label_map.json"),
        "num_classes": size.coco_classes,
        "num_train_examples": size.coco_train_images,
        "num_eval_examples": size.coco_val_images,
        "image_size": size.image_size,
        "crop_area_range": [0.5, 1.0],
        "shuffle_buffer": 1000,
    }
    transfer = {"weight_decay": 5e-5}
    if run in ("pretrained_schedule", "linear_probe"):
        # A preset's budget and learning rate; the scratch phase carries its own (fine-tuning
        # rejects these keys beside explicit phases, which would not read them).
        cfg["train"]["train_steps"] = size.budget_steps
        transfer["base_learning_rate"] = base_learning_rate_for(
            size.head_lr, size.batch_size, "sgd"
        )
    if run == "pretrained_schedule":
        transfer.update(preset="lp_ft", finetune_lr_factor=size.finetune_lr_factor)
    elif run == "linear_probe":
        transfer.update(preset="linear_probe")
    else:
        transfer["phases"] = [
            {
                "name": "scratch",
                "trainable": "all",
                "steps": size.budget_steps,
                "base_learning_rate": base_learning_rate_for(
                    size.scratch_lr, size.batch_size, "sgd"
                ),
                "warmup_steps": size.budget_steps // 10,
            }
        ]
    cfg["transfer"] = transfer
    return config_from_dict(cfg)


def compare_transfer(work_dir: str, size: BenchmarkSize = BenchmarkSize()) -> dict:
    """Runs the three-way comparison (see module doc) under `work_dir`; returns
    {"runs": {run: {"mAP", "micro_F1", "macro_F1", "train_seconds"}}, "pretrain": {...},
     "size": {...}, "pretrained_beats_scratch": bool}. Existing runs in `work_dir` are resumed or
    reused (delete the folder for a fresh measurement)."""
    from transfer_tf.training.pretrain import run_pretraining
    from transfer_tf.transfer.finetune import run_finetuning

    t0 = time.perf_counter()
    dirs = prepare_data(work_dir, size)
    data_seconds = time.perf_counter() - t0
    pretrain_dir = os.path.join(work_dir, "runs", "pretrain")
    t0 = time.perf_counter()
    run_pretraining(pretrain_config(size, dirs["imagenet"]), pretrain_dir)
    pretrain_seconds = time.perf_counter() - t0
    keras.backend.clear_session()
    runs = {}
    for run in RUNS:
        cfg = transfer_config(size, dirs["coco"], run)
        t0 = time.perf_counter()
        result = run_finetuning(
            cfg,
            os.path.join(work_dir, "runs", run),
            init_checkpoint="" if run == "scratch" else pretrain_dir,
        )
        metrics = result["eval"]
        runs[run] = {
            "mAP": round(metrics["mAP"], 4),
            "micro_F1": round(metrics["micro_F1"], 4),
            "macro_F1": round(metrics["macro_F1"], 4),
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        logging.info("%s: %s", run, runs[run])
        keras.backend.clear_session()
    return {
        "benchmark": "transfer",
        "runs": runs,
        "pretrained_beats_scratch": runs["pretrained_schedule"]["mAP"] > runs["scratch"]["mAP"],
        "pretrain": {"steps": size.pretrain_steps, "seconds": round(pretrain_seconds, 1)},
        "data_seconds": round(data_seconds, 1),
        "size": dataclasses.asdict(size),
    }


def markdown_table(result: dict) -> str:
    """The BENCHMARKS.md table of a `compare_transfer` result."""
    rows = ["| run | mAP | micro F1 | macro F1 | train s |", "|---|---|---|---|---|"]
    for run, m in result["runs"].items():
        rows.append(
            f"| {run} | {m['mAP']:.4f} | {m['micro_F1']:.4f} | {m['macro_F1']:.4f} | "
            f"{m['train_seconds']} |"
        )
    return "\n".join(rows)
