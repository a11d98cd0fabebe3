"""Does segmentation transfer? Semantic-FPN from the pretrained backbone vs from scratch vs on a
frozen pretrained backbone, at an equal step budget, over several seeds.

On the generated data (`datagen.shapes`): pretrain a ResNet on the ImageNet-like set (shape x
colour classes; once, with `size.seed`), then train the segmenter on COCO-like scenes built with
`include_masks` (exact instance masks of the same vocabulary; class maps background + one class
per category) three ways with the same steps, batch and data, and score each by mIoU at the
original image size on the val split (`pipelines.evaluate`'s metric):

  pretrained  backbone restored strictly from the pretraining run; `fpn,head` for a quarter of
              the budget (batch-statistics BN, as the `all` phase), then `all`
  frozen      the same backbone, only `fpn,head` train for the whole budget
  scratch     random initialisation, everything trains (cosine, warmup)

With a photo folder (`compare_segmentation(..., photo_dir=...)`) the same three runs use the
real-photo scenes of the photo transfer benchmark instead (`benchmarks/transfer_photos.py`: its
pretraining on the photographs, its COCO-layout scenes of pasted photo crops, whose rectangles
are exact masks).

Each seed (`seeds`) re-runs the three fine-tunings with another `cfg.seed` (data order,
augmentation, new layers' init); the pretraining and the scenes stay the same. The target is a
mean gain (pretrained - scratch) of at least 0.10 mIoU.

Every run is a real `run_finetuning` on TFRecords written by the builders, so the benchmark
exercises what `pipelines/finetune.py` runs.

Example:
    result = compare_segmentation("/tmp/bench_seg", SegmentationBenchmarkSize())
    result["mean"]["miou_gain"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass

import keras
from absl import logging

from transfer_tf.benchmarks import downstream
from transfer_tf.benchmarks import transfer as transfer_bench
from transfer_tf.config import ExperimentConfig, config_from_dict
from transfer_tf.data.builders import build_coco

RUNS = ("pretrained", "frozen", "scratch")
TARGET_GAIN = 0.10


@dataclass(frozen=True)
class SegmentationBenchmarkSize:
    """Sizes of the comparison (defaults: ~45 min on 2 loaded CPU cores)."""

    model: str = "resnet18"
    pretrain_image_size: int = 64
    pretrain_per_class: int = 80
    pretrain_steps: int = 600
    pretrain_batch_size: int = 32
    # COCO-like categories = the pretraining classes; 12: pairs share a colour (as detection's).
    classes: int = 12
    image_size: int = 128
    raw_image_size: tuple[int, int] = (96, 160)
    coco_train_images: int = 160
    coco_val_images: int = 60
    steps: int = 200
    batch_size: int = 8
    head: str = "semantic_fpn"
    fpn_channels: int = 64
    head_channels: int = 64
    # Effective (absolute) SGD learning rates at batch_size; configs get them per 256 images.
    lr: float = 0.01
    scratch_lr: float = 0.01
    seeds: tuple[int, ...] = (0, 1, 2)
    mixed_precision: str = "auto"
    seed: int = 0  # pretraining and scenes


def prepare_photo_data(work_dir: str, photo_dir: str, size: SegmentationBenchmarkSize) -> dict:
    """The real-photo scenes of the transfer benchmark (`benchmarks.transfer_photos`: its
    photographs as ImageNet-layout classes, and COCO-layout scenes of pasted photo crops, whose
    rectangles are exact masks), with the scenes also built with instance masks. Returns
    transfer_photos.prepare_data's dict with "coco" pointing at the masked shards."""
    from transfer_tf.benchmarks import transfer_photos

    psize = photo_size(size)
    dirs = transfer_photos.prepare_data(work_dir, photo_dir, psize)
    # Beside the unmasked shards of the same scenes (each scene-set size its own folder).
    coco_out = dirs["coco"] + "_masks"
    if not transfer_bench.is_built(coco_out, *transfer_bench.COCO_MANIFESTS):
        for split in ("train", "val"):
            raw = transfer_photos.coco_raw_dir(work_dir, psize, split)
            annotations = os.path.join(raw, "instances.json")
            with open(annotations) as f:
                if any("segmentation" not in a for a in json.load(f)["annotations"]):
                    raise ValueError(
                        f"{annotations}: scenes written before they carried masks; delete "
                        f"{os.path.dirname(os.path.dirname(raw))} to write them again"
                    )
            prefix = os.path.join(coco_out, split)
            build_coco([os.path.join(raw, "images")], annotations, prefix, num_shards=2,
                       include_masks=True)  # fmt: skip
    return {**dirs, "coco": coco_out}


def photo_size(size: SegmentationBenchmarkSize):
    """The transfer_photos sizes of these scenes: raw sides 2-3x `pretrain_image_size`, one
    class per photograph (`classes` of them objects of the scenes)."""
    from transfer_tf.benchmarks.transfer_photos import PhotoBenchmarkSize

    return PhotoBenchmarkSize(
        model=size.model,
        image_size=size.pretrain_image_size,
        mixed_precision=size.mixed_precision,
        coco_classes=size.classes,
        coco_train_images=size.coco_train_images,
        coco_val_images=size.coco_val_images,
        seed=size.seed,
    )


def segmentation_config(
    size: SegmentationBenchmarkSize, coco_dir: str, run: str, seed: int
) -> ExperimentConfig:
    """One run's config (`pretrained`, `frozen` or `scratch`, see module doc) with `cfg.seed`."""
    steps = size.steps
    lr = downstream.sgd_base_learning_rate(size, size.lr)
    heads = {"name": "heads", "trainable": "fpn,head", "base_learning_rate": lr,
             "frozen_batchnorm": "train"}  # fmt: skip
    if run == "pretrained":
        probe = steps // 4
        phases = [
            {**heads, "steps": probe, "warmup_steps": probe // 5, "lr_schedule": "constant"},
            {"name": "all", "trainable": "all", "steps": steps - probe, "base_learning_rate": lr},
        ]  # fmt: skip
    elif run == "frozen":
        phases = [{**heads, "steps": steps, "warmup_steps": steps // 10}]
    else:
        phases = downstream.scratch_phases(size, steps)
    return config_from_dict(
        {
            "seed": seed,
            "model": {"name": size.model},
            **downstream.finetune_sections(size, coco_dir, "segmentation", phases),
            "segmentation": {
                "image_size": size.image_size,
                "head": size.head,
                "fpn_channels": size.fpn_channels,
                "head_channels": size.head_channels,
                "scale_jitter": [0.75, 1.5],
                # Generated scenes' sides are raw_image_size; the photo scenes' up to 3x the
                # pretraining side (transfer_photos).
                "max_eval_size": max(*size.raw_image_size, 3 * size.pretrain_image_size),
            },
        }
    )


def compare_segmentation(
    work_dir: str,
    size: SegmentationBenchmarkSize = SegmentationBenchmarkSize(),
    photo_dir: str = "",
) -> dict:
    """Runs the comparison (see module doc) under `work_dir`; returns {"seeds": {seed: {run:
    {"mIoU", "pixel_accuracy", "train_seconds", "images_per_sec"}, "miou_gain"}}, "mean": {run:
    mean mIoU, "miou_gain", "miou_gain_frozen"}, "target_met", "pretrain", "size"}. Existing runs
    in `work_dir` are resumed or reused (delete the folder for a fresh measurement).
    `photo_dir`: the real-photo scenes instead (`prepare_photo_data`), pretrained with the photo
    transfer benchmark's recipe (`transfer_photos.pretrain_config`)."""
    from transfer_tf.transfer.finetune import run_finetuning

    t0 = time.perf_counter()
    if photo_dir:
        from transfer_tf.benchmarks import transfer_photos

        dirs = prepare_photo_data(work_dir, photo_dir, size)
        size = dataclasses.replace(size, classes=dirs["coco_classes"])
        pretrain_cfg = transfer_photos.pretrain_config(photo_size(size), dirs)
    else:
        dirs = downstream.prepare_data(work_dir, size, include_masks=True)
        pretrain_cfg = downstream.pretrain_config(size, dirs["imagenet"])
    data_seconds = time.perf_counter() - t0
    pretrain_dir = os.path.join(work_dir, "runs", "pretrain")
    pretrain_seconds = downstream.pretrain_once(pretrain_cfg, pretrain_dir)
    seeds = {}
    for seed in size.seeds:
        runs = {}
        for run in RUNS:
            t0 = time.perf_counter()
            result = run_finetuning(
                segmentation_config(size, dirs["coco"], run, seed),
                os.path.join(work_dir, "runs", f"{run}_{size.steps}steps_seed{seed}"),
                init_checkpoint="" if run == "scratch" else pretrain_dir,
            )
            seconds = time.perf_counter() - t0
            m = result["eval"]
            runs[run] = {
                "mIoU": round(m["mIoU"], 4),
                "pixel_accuracy": round(m["pixel_accuracy"], 4),
                "train_seconds": round(seconds, 1),
                "images_per_sec": round(size.steps * size.batch_size / seconds, 2),
            }
            logging.info("%s, seed %d: %s", run, seed, runs[run])
            keras.backend.clear_session()
        gain = runs["pretrained"]["mIoU"] - runs["scratch"]["mIoU"]
        seeds[str(seed)] = {**runs, "miou_gain": round(gain, 4)}
    mean = {r: round(statistics.mean(s[r]["mIoU"] for s in seeds.values()), 4) for r in RUNS}
    gain = round(mean["pretrained"] - mean["scratch"], 4)
    return {
        "benchmark": "segmentation",
        "data": "photos" if photo_dir else "generated",
        "seeds": seeds,
        "mean": {
            **mean,
            "miou_gain": gain,
            "miou_gain_frozen": round(mean["frozen"] - mean["scratch"], 4),
        },
        "target_met": gain >= TARGET_GAIN,
        "pretrain": {
            # The photo recipe's length is in epochs (transfer_photos.pretrain_config).
            "steps": None if photo_dir else size.pretrain_steps,
            "epochs": pretrain_cfg.train.epochs if photo_dir else None,
            "seconds": pretrain_seconds,  # None: reused run
        },
        "data_seconds": round(data_seconds, 1),
        "size": dataclasses.asdict(size),
    }


def markdown_table(result: dict) -> str:
    """The BENCHMARKS.md table of a `compare_segmentation` result."""
    rows = [
        "| seed | run | mIoU | pixel acc. | run s | img/run s | mIoU gain vs scratch |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, runs in result["seeds"].items():
        for run in RUNS:
            m = runs[run]
            gain = "" if run == "scratch" else f"{m['mIoU'] - runs['scratch']['mIoU']:+.4f}"
            rows.append(
                f"| {seed} | {run} | {m['mIoU']:.4f} | {m['pixel_accuracy']:.4f} | "
                f"{m['train_seconds']} | {m['images_per_sec']} | {gain} |"
            )
    mean = result["mean"]
    for run in RUNS:
        gain = "" if run == "scratch" else f"{mean[run] - mean['scratch']:+.4f}"
        rows.append(f"| mean | {run} | {mean[run]:.4f} | | | | {gain} |")
    return "\n".join(rows)
