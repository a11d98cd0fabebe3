"""What the two downstream-task benchmarks (`benchmarks/detection.py`, `benchmarks/segmentation.py`)
share: the generated ImageNet-like set and COCO-like scenes, the classification benchmark's
pretraining recipe at their sizes, one pretraining run reused across their fine-tunings, and the
data / train / transfer sections of their fine-tuning configs.

Both benchmarks' size dataclasses carry the fields `DownstreamBenchmarkSize` names; each keeps its
own dataclass (their fields and defaults are what their results report under "size").

Example:
    dirs = prepare_data(work_dir, size, include_masks=True)  # {"imagenet": ..., "coco": ...}
    seconds = pretrain_once(pretrain_config(size, dirs["imagenet"]), pretrain_dir)
"""

from __future__ import annotations

import os
import time
from typing import Protocol

import keras
import tensorflow as tf

from transfer_tf.benchmarks import transfer as transfer_bench
from transfer_tf.config import ExperimentConfig
from transfer_tf.datagen import shapes
from transfer_tf.training.schedules import base_learning_rate_for


class DownstreamBenchmarkSize(Protocol):
    """The sizes both downstream benchmarks read here (pretraining, scenes, fine-tuning batch)."""

    model: str
    pretrain_image_size: int
    pretrain_per_class: int
    pretrain_steps: int
    pretrain_batch_size: int
    classes: int  # pretraining classes = COCO-like categories
    raw_image_size: tuple[int, int]
    coco_train_images: int
    coco_val_images: int
    batch_size: int
    scratch_lr: float
    mixed_precision: str
    seed: int


def prepare_imagenet(work_dir: str, size: DownstreamBenchmarkSize) -> str:
    """The ImageNet-like pretraining set of `size` (shape x colour classes, sides 1-2x
    `pretrain_image_size`) generated and built once under `work_dir` (same seed). Returns its
    shard folder."""
    inet_out = os.path.join(work_dir, "tfrecords", "imagenet")
    if not transfer_bench.is_built(inet_out, *transfer_bench.IMAGENET_MANIFESTS):
        inet = shapes.write_imagenet_like(
            os.path.join(work_dir, "raw", "imagenet"),
            num_classes=size.classes,
            train_per_class=size.pretrain_per_class,
            val_per_class=5,
            image_size_range=(size.pretrain_image_size, 2 * size.pretrain_image_size),
            seed=size.seed,
        )
        transfer_bench.build_imagenet_shards(inet, inet_out, size.seed)
    return inet_out


def prepare_scenes(
    work_dir: str, size: DownstreamBenchmarkSize, include_masks: bool = False
) -> str:
    """The COCO-like scenes of `size` (train and val, exact boxes; `include_masks`: shards with
    the instance masks too) under `work_dir`, generated and built once (same seed). Returns their
    shard folder."""
    return transfer_bench.coco_like_scenes(
        work_dir,
        size.classes,
        size.raw_image_size,
        size.coco_train_images,
        size.coco_val_images,
        size.seed,
        include_masks=include_masks,
    )


def prepare_data(
    work_dir: str, size: DownstreamBenchmarkSize, include_masks: bool = False
) -> dict[str, str]:
    """Both sets of `size` (`prepare_imagenet`, `prepare_scenes`); later calls reuse finished
    builds. Returns {"imagenet": shard dir, "coco": shard dir}."""
    return {
        "imagenet": prepare_imagenet(work_dir, size),
        "coco": prepare_scenes(work_dir, size, include_masks),
    }


def pretrain_config(size: DownstreamBenchmarkSize, imagenet_dir: str) -> ExperimentConfig:
    """The classification transfer benchmark's pretraining recipe at this benchmark's sizes."""
    return transfer_bench.pretrain_config(
        transfer_bench.BenchmarkSize(
            model=size.model,
            image_size=size.pretrain_image_size,
            pretrain_classes=size.classes,
            pretrain_per_class=size.pretrain_per_class,
            pretrain_steps=size.pretrain_steps,
            batch_size=size.pretrain_batch_size,
            mixed_precision=size.mixed_precision,
            seed=size.seed,
        ),
        imagenet_dir,
    )


def pretrain_once(cfg: ExperimentConfig, pretrain_dir: str) -> float | None:
    """Runs (or resumes, or reuses) the pretraining `cfg` in `pretrain_dir`. Returns its seconds,
    or None when `pretrain_dir` already held a checkpoint: the time of a reused run says nothing
    about the pretraining."""
    from transfer_tf.training.pretrain import run_pretraining

    t0 = time.perf_counter()
    reused = tf.train.latest_checkpoint(os.path.join(pretrain_dir, "checkpoints")) is not None
    run_pretraining(cfg, pretrain_dir)
    seconds = time.perf_counter() - t0
    keras.backend.clear_session()
    return None if reused else round(seconds, 1)


def sgd_base_learning_rate(size: DownstreamBenchmarkSize, lr: float) -> float:
    """The config's per-256-images SGD rate of the effective rate `lr` at `size.batch_size`."""
    return base_learning_rate_for(lr, size.batch_size, "sgd")


def scratch_phases(size: DownstreamBenchmarkSize, steps: int) -> list[dict]:
    """The from-scratch run's one phase: everything trains `steps` at `size.scratch_lr`, with a
    tenth of them warming up."""
    return [
        {"name": "scratch", "trainable": "all", "steps": steps,
         "base_learning_rate": sgd_base_learning_rate(size, size.scratch_lr),
         "warmup_steps": steps // 10},
    ]  # fmt: skip


def finetune_sections(
    size: DownstreamBenchmarkSize, coco_dir: str, task: str, phases: list[dict]
) -> dict:
    """The data, train and transfer sections of a fine-tuning config of `task` on the scenes in
    `coco_dir` (SGD with weight decay, one device); the caller adds seed, model and the task's
    own section."""
    return {
        "data": {
            "schema": "coco",
            "train_pattern": os.path.join(coco_dir, "train-*"),
            "eval_pattern": os.path.join(coco_dir, "val-*"),
            "label_map_file": os.path.join(coco_dir, "label_map.json"),
            "num_classes": size.classes,
            "num_train_examples": size.coco_train_images,
            "num_eval_examples": size.coco_val_images,
            "shuffle_buffer": 1000,
        },
        "train": {
            "global_batch_size": size.batch_size,
            "strategy": "one_device",
            "mixed_precision": size.mixed_precision,
            "checkpoint_every_steps": 10_000,
            "log_every_steps": 50,
        },
        "transfer": {
            "task": task,
            "optimizer": "sgd",
            "weight_decay": 1e-4,
            "phases": phases,
        },
    }
