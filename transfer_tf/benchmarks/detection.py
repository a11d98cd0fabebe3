"""Does detection transfer? RetinaNet from the pretrained backbone vs from scratch, equal budget.

On the generated data (`datagen.shapes`): pretrain a ResNet on the ImageNet-like set (shape x
colour classes), then train RetinaNet on the COCO-like scenes (exact boxes, the same vocabulary)
two ways with the same steps, batch and data, at each of several step budgets, and score both
with COCOeval on the val split:

  pretrained  backbone from the pretraining run (strict restore); `fpn,head` for a quarter of the
              budget, then `all` at the fine-tuning LR (the recipe's schedule). The frozen
              backbone's BN keeps normalising with batch statistics (`frozen_batchnorm: train`):
              switching from moving to batch statistics when `all` starts cost ~0.2 AP50 at
              100 steps of batch 8 (BENCHMARKS.md)
  scratch     random initialisation, everything trains (cosine, warmup)

Then detection training throughput (images/s) on the real input pipeline: the Trainer's own
measure over a steady-state execution, after the step is traced.

Every run is a real `run_finetuning` on TFRecords written by the builders, so the benchmark
exercises what `pipelines/finetune.py` runs.

Example:
    result = compare_detection("/tmp/bench_det", DetectionBenchmarkSize())
    result["runs"]["pretrained"]["AP50"] - result["runs"]["scratch"]["AP50"]
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass

import keras
from absl import logging

from transfer_tf.benchmarks import downstream
from transfer_tf.config import ExperimentConfig, config_from_dict

RUNS = ("pretrained", "scratch")


@dataclass(frozen=True)
class DetectionBenchmarkSize:
    """Sizes of the comparison (defaults: ~15 min on 2 loaded CPU cores)."""

    model: str = "resnet18"
    pretrain_image_size: int = 64
    pretrain_per_class: int = 80
    pretrain_steps: int = 600
    pretrain_batch_size: int = 32
    # COCO-like categories = the pretraining classes. 12: pairs of classes share a colour, so
    # telling them apart takes shape features (with 6, colour alone separates every class and a
    # detector from scratch catches up within ~100 steps: BENCHMARKS.md).
    classes: int = 12
    detection_image_size: int = 128
    raw_image_size: tuple[int, int] = (96, 160)
    coco_train_images: int = 160
    coco_val_images: int = 100
    # Each budget trains both runs for exactly this many steps (the gap closes as budgets grow).
    budgets: tuple[int, ...] = (50, 100, 300)
    batch_size: int = 8
    head_convs: int = 1  # RetinaNet's 4 dominate a 128 px step on CPU; 1 keeps the budget
    # BN of the frozen backbone in the `fpn,head` phase: `train` (batch statistics) or
    # `inference` (the pretrained moving statistics, until `all` starts).
    heads_batchnorm: str = "train"
    # Effective (absolute) SGD learning rates at batch_size, as measured; the configs get them
    # per 256 images (`base_learning_rate_for`).
    head_lr: float = 0.01
    finetune_lr_factor: float = 1.0
    scratch_lr: float = 0.01
    throughput_steps: int = 20
    mixed_precision: str = "auto"
    seed: int = 0


def detection_config(
    size: DetectionBenchmarkSize, coco_dir: str, run: str, steps: int
) -> ExperimentConfig:
    """One detection run's config: `pretrained` (fpn,head then all) or `scratch` (all), `steps`
    long."""

    def base(lr: float) -> float:
        return downstream.sgd_base_learning_rate(size, lr)

    if run == "pretrained":
        probe = steps // 4
        phases = [
            {"name": "heads", "trainable": "fpn,head", "steps": probe,
             "base_learning_rate": base(size.head_lr), "warmup_steps": probe // 5,
             "lr_schedule": "constant", "frozen_batchnorm": size.heads_batchnorm},
            {"name": "all", "trainable": "all", "steps": steps - probe,
             "base_learning_rate": base(size.head_lr * size.finetune_lr_factor)},
        ]  # fmt: skip
    else:
        phases = downstream.scratch_phases(size, steps)
    return config_from_dict(
        {
            "seed": size.seed,
            "model": {"name": size.model},
            **downstream.finetune_sections(size, coco_dir, "detection", phases),
            "detection": {
                "image_size": size.detection_image_size,
                "max_boxes": 16,
                "head_convs": size.head_convs,
            },
        }
    )


def measure_throughput(cfg: ExperimentConfig, steps: int) -> dict:
    """Detection training images/s of `cfg` on its real input pipeline: `steps` optimizer steps
    in one execution after a traced warm-up execution (a throwaway run directory)."""
    from transfer_tf.data.dataset_fn import dataset_fn
    from transfer_tf.detection.objective import Detection
    from transfer_tf.training import optimizers
    from transfer_tf.training import strategy as strategy_lib
    from transfer_tf.training.run_setup import build_model, checked_config, setup_runtime, start_run
    from transfer_tf.training.schedules import warmup_constant

    cfg = checked_config(cfg)
    train = dataclasses.replace(cfg.train, steps_per_execution=steps, log_every_steps=steps)
    cfg = dataclasses.replace(cfg, train=train)
    strategy = strategy_lib.make_strategy("one_device")
    cfg, _ = setup_runtime(cfg, strategy)
    with strategy.scope():
        model = build_model(cfg)
        optimizer = optimizers.make_optimizer(cfg.train, optimizer="sgd", weight_decay=0.0)
    with tempfile.TemporaryDirectory(prefix="det_throughput_") as model_dir:
        trainer = start_run(cfg, model_dir, strategy, model, optimizer, weight_decay=0.0)
        trainer.checkpoint_every_steps = 10**9
        kwargs = dict(
            objective=Detection(model, cfg.detection), lr_schedule=warmup_constant(1e-3, 0)
        )
        train_fn = dataset_fn(cfg, "train")
        trainer.train(train_fn, end_step=steps, **kwargs)  # traces the step
        logs = trainer.train(train_fn, end_step=2 * steps, **kwargs)
    return {
        "images_per_sec": round(logs["images_per_sec"], 2),
        "step_time_ms": round(logs["step_time_ms"], 1),
        "steps": steps,
        "batch_size": cfg.train.global_batch_size,
    }


def detection_throughput(work_dir: str, size: DetectionBenchmarkSize) -> dict:
    """Only the images/s measure, for `size`'s model, input size, heads and batch (the data of
    `work_dir` is generated first if missing)."""
    dirs = downstream.prepare_data(work_dir, size)
    cfg = detection_config(size, dirs["coco"], "scratch", size.budgets[0])
    return {
        "benchmark": "detection_throughput",
        "model": size.model,
        "image_size": size.detection_image_size,
        "head_convs": size.head_convs,
        "mixed_precision": size.mixed_precision,
        **measure_throughput(cfg, size.throughput_steps),
    }


def compare_detection(
    work_dir: str, size: DetectionBenchmarkSize = DetectionBenchmarkSize()
) -> dict:
    """Runs the comparison (see module doc) under `work_dir`; returns {"budgets": {steps:
    {run: {"AP", "AP50", "AP75", "APs", "APm", "APl", "train_seconds"}, "ap50_gain",
    "target_met" (gain >= 0.15)}}, "target_met_at_steps", "throughput": {...}, "pretrain": {...},
    "size": {...}}. Existing runs in `work_dir` are resumed or reused (delete the folder for a
    fresh measurement)."""
    from transfer_tf.transfer.finetune import run_finetuning

    t0 = time.perf_counter()
    dirs = downstream.prepare_data(work_dir, size)
    data_seconds = time.perf_counter() - t0
    pretrain_dir = os.path.join(work_dir, "runs", "pretrain")
    pretrain_seconds = downstream.pretrain_once(
        downstream.pretrain_config(size, dirs["imagenet"]), pretrain_dir
    )
    budgets = {}
    for steps in size.budgets:
        runs = {}
        for run in RUNS:
            t0 = time.perf_counter()
            result = run_finetuning(
                detection_config(size, dirs["coco"], run, steps),
                os.path.join(work_dir, "runs", f"{run}_{steps}steps"),
                init_checkpoint=pretrain_dir if run == "pretrained" else "",
            )
            m = result["eval"]
            runs[run] = {
                **{k: round(m[k], 4) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
                "train_seconds": round(time.perf_counter() - t0, 1),
            }
            logging.info("%s, %d steps: %s", run, steps, runs[run])
            keras.backend.clear_session()
        gain = runs["pretrained"]["AP50"] - runs["scratch"]["AP50"]
        budgets[str(steps)] = {**runs, "ap50_gain": round(gain, 4), "target_met": gain >= 0.15}
    throughput = measure_throughput(
        detection_config(size, dirs["coco"], "scratch", size.budgets[0]), size.throughput_steps
    )
    keras.backend.clear_session()
    return {
        "benchmark": "detection",
        "budgets": budgets,
        "target_met_at_steps": [int(b) for b, r in budgets.items() if r["target_met"]],
        "throughput": throughput,
        "pretrain": {
            "steps": size.pretrain_steps,
            "seconds": pretrain_seconds,  # None: reused run
        },
        "data_seconds": round(data_seconds, 1),
        "size": dataclasses.asdict(size),
    }


def markdown_table(result: dict) -> str:
    """The BENCHMARKS.md table of a `compare_detection` result."""
    rows = [
        "| steps | run | AP | AP50 | AP75 | train s | AP50 gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for steps, budget in result["budgets"].items():
        for run in RUNS:
            m = budget[run]
            gain = f"{budget['ap50_gain']:+.4f}" if run == "pretrained" else ""
            rows.append(
                f"| {steps} | {run} | {m['AP']:.4f} | {m['AP50']:.4f} | {m['AP75']:.4f} | "
                f"{m['train_seconds']} | {gain} |"
            )
    return "\n".join(rows)
