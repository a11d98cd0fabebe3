"""Does self-supervised pretraining learn transferable features? Equal budgets, generated data.

On `datagen.shapes` data (the ImageNet-like shape x colour set and the COCO-like scenes of the
same vocabulary, through the real builders and input pipeline):

  1. pretrain the same ResNet for the same steps and batch once per SSL method (SimCLR, BYOL: the
     ImageNet-like images with their labels ignored) and once `supervised` (the same images with
     labels; `benchmarks.transfer`'s recipe);
  2. linear probe (frozen backbone, a new head trained on the labels) on the ImageNet-like set
     from (a) each SSL backbone, (b) a random-init backbone, (c) the supervised backbone; top-1
     on its validation split;
  3. COCO-like multi-label fine-tuning (LP-FT, `benchmarks.transfer`'s recipe, equal steps) from
     (a), (c) and from scratch; mAP on the COCO-like val split. With every train label, and
     again on the first `coco_label_fractions` of the train scenes (SimCLR's semi-supervised
     protocol, its 1 % / 10 % ImageNet labels: where pretraining is meant to pay off), the same
     steps and val split.

With `detection_steps`, every backbone (each SSL arm, supervised) and scratch also train a
RetinaNet on COCO-like detection scenes for that many steps (`benchmarks.ssl_detection`): COCO's
own transfer task, scored by AP and AP50.

With `in_domain_unlabeled`, each method also pretrains as `<method>_in_domain`: the same steps
and recipe on the ImageNet-like train images plus the COCO-like train scenes, all unlabeled (a
flat folder through the folder builder's unlabeled mode). That is self-supervision's premise,
pretraining on images nobody labelled, here the target task's own; the supervised arm cannot use
them, scratch sees the same scenes with their labels. It is reported as its own arm, beside the
equal-data one.

The arms that do not depend on the method (data, supervised, random init, scratch) run once per
seed and are shared by the methods. Each seed draws its own data and runs (`seed_<n>/`), and
`ssl_summary.summarize` averages the seeds: at this size one seed's mAP moves by ~0.03 from run
to run.

Targets (issue 17, judged in `ssl_summary`): probe top-1 (a) - (b) >= 0.3 and mAP (a) - scratch
>= 0.15.

Example:
    result = compare_ssl("/tmp/bench_ssl", SSLBenchmarkSize(methods=("simclr", "byol")))
    result["probe_top1"]["simclr"] - result["probe_top1"]["random_init"]
    summary = ssl_summary.summarize([result, compare_ssl(...)])  # over seeds
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import keras
from absl import logging

from transfer_tf.benchmarks import detection, ssl_detection
from transfer_tf.benchmarks import transfer as transfer_bench
from transfer_tf.benchmarks.ssl_summary import judge_targets
from transfer_tf.config import ExperimentConfig, config_from_dict, to_dict
from transfer_tf.errors import UsageError
from transfer_tf.training.schedules import base_learning_rate_for


@dataclass(frozen=True)
class SSLBenchmarkSize:
    """Sizes and recipe of the comparison (defaults: ~10-15 min on 2 loaded CPU cores)."""

    methods: tuple[str, ...] = ("simclr", "byol")
    model: str = "resnet18"
    image_size: int = 32
    pretrain_classes: int = 12
    pretrain_per_class: int = 60
    pretrain_val_per_class: int = 20
    pretrain_steps: int = 300  # both pretrainings: the same steps at the same batch
    batch_size: int = 64
    # SSL recipe at a small batch: LARS at SimCLR's square-root scaling 0.075 * sqrt(batch).
    ssl_peak_lr: float = 0.6
    temperature: float = 0.2
    # The view recipe (SimCLR's ImageNet strength and crop): against 0.5 / 0.25-1 (runs
    # 1-5) it lifted BYOL's probe past the target and left mAP within noise (BENCHMARKS.md run 6).
    color_strength: float = 1.0
    momentum_base: float = 0.99  # BYOL, short run
    crop_area_range: tuple[float, float] = (0.08, 1.0)
    probe_steps: int = 150
    # Adam: insensitive to the scale of each backbone's features. Effective at batch_size, as
    # measured; the config gets it per 256 images (`base_learning_rate_for`, square-root rule).
    probe_lr: float = 0.01
    coco_classes: int = 8
    coco_train_images: int = 400
    coco_val_images: int = 200
    budget_steps: int = 100  # each COCO-like run
    # Fine-tuning on fewer labelled scenes too (< 1: the first fraction of the train set).
    coco_label_fractions: tuple[float, ...] = (0.25,)
    in_domain_unlabeled: bool = False  # also `<method>_in_domain` arms (module doc)
    # > 0: also RetinaNet on COCO-like scenes from each backbone and scratch, this many steps
    # (`benchmarks.ssl_detection`).
    detection_steps: int = 0
    mixed_precision: str = "auto"
    xla: bool | str = "auto"  # measured per machine (training.autotune), as the shipped configs
    seed: int = 0

    def transfer_size(self) -> transfer_bench.BenchmarkSize:
        """The `benchmarks.transfer` size sharing this one's data, model and budgets."""
        return transfer_bench.BenchmarkSize(
            model=self.model,
            image_size=self.image_size,
            pretrain_classes=self.pretrain_classes,
            pretrain_per_class=self.pretrain_per_class,
            pretrain_steps=self.pretrain_steps,
            pretrain_val_per_class=self.pretrain_val_per_class,
            coco_classes=self.coco_classes,
            coco_train_images=self.coco_train_images,
            coco_val_images=self.coco_val_images,
            budget_steps=self.budget_steps,
            batch_size=self.batch_size,
            mixed_precision=self.mixed_precision,
            xla=self.xla,
            seed=self.seed,
        )

    def detection_size(self) -> detection.DetectionBenchmarkSize:
        """The detection benchmark's scenes and recipe for the detection arms: its categories
        are the pretraining classes, one budget of `detection_steps`, this seed and precision."""
        return detection.DetectionBenchmarkSize(
            model=self.model,
            classes=self.pretrain_classes,
            budgets=(self.detection_steps,),
            mixed_precision=self.mixed_precision,
            seed=self.seed,
        )


IN_DOMAIN = "_in_domain"  # suffix of the arms pretrained on the unlabeled pool


def ssl_config(
    size: SSLBenchmarkSize, imagenet_dir: str, method: str, unlabeled: tuple[str, int] | None = None
) -> ExperimentConfig:
    """The SSL pretraining: the supervised benchmark's data and loop, `ssl.method`, LARS.
    `unlabeled`: (shard folder, image count) of an unlabeled pool to pretrain on instead."""
    base = transfer_bench.pretrain_config(size.transfer_size(), imagenet_dir)
    cfg = to_dict(base)
    if unlabeled:
        # The folder builder's unlabeled shards hold one class (their manifest says so).
        cfg["data"].update(
            train_pattern=os.path.join(unlabeled[0], "train-*"),
            num_train_examples=unlabeled[1],
            num_classes=1,
        )
    cfg["data"]["crop_area_range"] = list(size.crop_area_range)
    warmup = max(1, size.pretrain_steps // 10)
    steps_per_epoch = max(1, cfg["data"]["num_train_examples"] // size.batch_size)
    cfg["train"].update(
        optimizer="lars",
        base_learning_rate=size.ssl_peak_lr * 256 / size.batch_size,
        weight_decay=1e-6,
        warmup_epochs=warmup / steps_per_epoch,
    )
    cfg["ssl"] = {"method": method, "color_strength": size.color_strength, "knn_k": 0}
    # Small heads for a small model and data set (the recipe's 2048/4096 are for ResNet-50); each
    # method's own keys only (the other's would be accepted and ignored: an error).
    if method == "byol":
        cfg["ssl"].update(
            projection_widths=[512, 128],
            predictor_widths=[512, 128],
            momentum_base=size.momentum_base,
        )
    else:
        cfg["ssl"].update(projection_widths=[512, 512, 128], temperature=size.temperature)
    return config_from_dict(cfg)


def probe_config(size: SSLBenchmarkSize, imagenet_dir: str) -> ExperimentConfig:
    """Linear probe on the ImageNet-like labels: frozen backbone, new head, Adam, cosine."""
    cfg = to_dict(transfer_bench.pretrain_config(size.transfer_size(), imagenet_dir))
    cfg["data"].update(
        eval_pattern=os.path.join(imagenet_dir, "validation-*"),
        num_eval_examples=size.pretrain_classes * size.pretrain_val_per_class,
    )
    cfg["train"]["train_steps"] = size.probe_steps
    cfg["transfer"] = {
        "preset": "linear_probe",
        "optimizer": "adam",
        "base_learning_rate": base_learning_rate_for(size.probe_lr, size.batch_size, "adam"),
        "weight_decay": 0.0,
    }
    return config_from_dict(cfg)


def label_counts(size: SSLBenchmarkSize) -> list[int]:
    """The numbers of labelled COCO-like train scenes of the few-label fine-tunings."""
    counts = []
    for fraction in size.coco_label_fractions:
        if not 0 < fraction < 1:
            raise ValueError(f"coco_label_fractions: {fraction} is not in (0, 1)")
        counts.append(max(1, round(fraction * size.coco_train_images)))
    return sorted(set(counts), reverse=True)


def few_label_shards(work_dir: str, size: SSLBenchmarkSize, count: int) -> str:
    """Shards of the first `count` COCO-like train scenes (`transfer_bench.write_coco_like_split`
    with the full set's seed: exactly its first `count`). Returns their folder; built once."""
    out = os.path.join(work_dir, "tfrecords", f"coco_train_{count}")
    if not transfer_bench.is_built(out, "manifest-train.json"):
        transfer_bench.write_coco_like_split(
            os.path.join(work_dir, "raw", f"coco_train_{count}"),
            os.path.join(out, "train"),
            size.coco_classes,
            size.transfer_size().raw_image_size_range(),
            count,
            size.seed,
        )
    return out


def in_domain_shards(
    work_dir: str, size: SSLBenchmarkSize, dirs: dict[str, str]
) -> tuple[str, int]:
    """The unlabeled pool of the `_in_domain` arms: the ImageNet-like train images and the
    COCO-like train scenes (hard links, or copies, in one flat folder) through
    `build_folder(unlabeled=True)`. `dirs`: `transfer_bench.prepare_data`'s, whose raw train
    folders are read. Returns (shard folder, image count); built once.

    Raises:
      UsageError: the raw folders do not hold every train image `size` names (deleted or moved
        since the shards were built): a smaller pool would silently change the arm.
    """
    import glob
    import shutil

    from transfer_tf.data.builders import build_folder

    out = os.path.join(work_dir, "tfrecords", "unlabeled_pool")
    if not transfer_bench.is_built(out, *transfer_bench.IMAGENET_MANIFESTS):
        sources = sorted(glob.glob(os.path.join(dirs["imagenet_train_raw"], "*", "*")))
        sources += sorted(glob.glob(os.path.join(dirs["coco_train_raw"], "*")))
        expected = size.pretrain_classes * size.pretrain_per_class + size.coco_train_images
        if len(sources) != expected:
            raise UsageError(
                f"{dirs['imagenet_train_raw']} and {dirs['coco_train_raw']}: {len(sources)} "
                f"train images, expected {expected}; delete {work_dir} to generate them again"
            )
        pool = os.path.join(work_dir, "raw", "unlabeled_pool")
        shutil.rmtree(pool, ignore_errors=True)
        os.makedirs(pool)
        for i, path in enumerate(sources):
            target = os.path.join(pool, f"{i:06d}_{os.path.basename(path)}")
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        build_folder(pool, out, train_shards=4, validation_shards=0, unlabeled=True, seed=size.seed)
    with open(os.path.join(out, transfer_bench.IMAGENET_MANIFESTS[0])) as f:
        count = json.load(f)["splits"]["train"]["records"]
    return out, count


def compare_ssl(work_dir: str, size: SSLBenchmarkSize = SSLBenchmarkSize()) -> dict:
    """Runs the comparison of the module doc for `size.seed` under `work_dir/seed_<n>`.

    Returns JSON-ready results: `probe_top1` and `coco_mAP` keyed by arm (each method, plus
    `random_init`/`supervised` and `supervised`/`scratch`), `targets` per method, each method's
    final pretraining logs and the seconds per run. Existing runs are resumed or reused (delete
    the folder to measure afresh); `reused` names the runs whose folder existed before, whose
    seconds are therefore not a whole run's."""
    from transfer_tf.training.pretrain import run_pretraining
    from transfer_tf.transfer.finetune import run_finetuning

    seconds: dict[str, float] = {}
    reused: list[str] = []

    def timed(name, run, cfg, run_dir, **kwargs):
        """`run(cfg, run_dir, **kwargs)`, its seconds kept under `name`."""
        if os.path.isdir(run_dir):
            reused.append(name)
        t0 = time.perf_counter()
        out = run(cfg, run_dir, **kwargs)
        seconds[name] = round(time.perf_counter() - t0, 1)
        keras.backend.clear_session()
        return out

    work_dir = os.path.join(work_dir, f"seed_{size.seed}")
    tsize = size.transfer_size()
    t0 = time.perf_counter()
    dirs = transfer_bench.prepare_data(work_dir, tsize)
    seconds["data"] = round(time.perf_counter() - t0, 1)
    runs = os.path.join(work_dir, "runs")
    # Each SSL arm: (name, method, unlabeled pool or None for the ImageNet-like train images).
    ssl_arms = [(m, m, None) for m in size.methods]
    if size.in_domain_unlabeled:
        pool = in_domain_shards(work_dir, size, dirs)
        ssl_arms += [(m + IN_DOMAIN, m, pool) for m in size.methods]
    arms = [name for name, _, _ in ssl_arms]
    backbones = {name: os.path.join(runs, f"pretrain_{name}") for name in arms}
    backbones["random_init"] = ""
    backbones["supervised"] = os.path.join(runs, "pretrain_supervised")
    final_logs = {}
    for name, method, pool in ssl_arms:
        logs = timed(
            f"pretrain_{name}",
            run_pretraining,
            ssl_config(size, dirs["imagenet"], method, pool),
            backbones[name],
        )
        final_logs[name] = {
            k: round(v, 4)
            for k, v in logs.items()
            if isinstance(v, float) and math.isfinite(v) and k != "learning_rate"
        }
    timed(
        "pretrain_supervised",
        run_pretraining,
        transfer_bench.pretrain_config(tsize, dirs["imagenet"]),
        backbones["supervised"],
    )
    probe_top1 = {}
    for name, source in backbones.items():
        result = timed(
            f"probe_{name}",
            run_finetuning,
            probe_config(size, dirs["imagenet"]),
            os.path.join(runs, f"probe_{name}"),
            init_checkpoint=source,
        )
        probe_top1[name] = round(result["eval"]["top_1_accuracy"], 4)
        logging.info("linear probe from %s: top-1 %.4f", name, probe_top1[name])
    # Every train label first, then the few-label fine-tunings: (suffix, shard folder, count).
    tasks = [("", "", size.coco_train_images)]
    tasks += [(f"_{n}", few_label_shards(work_dir, size, n), n) for n in label_counts(size)]
    coco_map, few_labels = {}, {}
    for suffix, shards, count in tasks:
        scores = coco_map if not suffix else few_labels.setdefault(str(count), {})
        for name in (*arms, "supervised", "scratch"):
            run = "scratch" if name == "scratch" else "pretrained_schedule"
            cfg = transfer_bench.transfer_config(tsize, dirs["coco"], run)
            if shards:
                cfg = with_train_shards(cfg, os.path.join(shards, "train-*"), count)
            result = timed(
                f"coco_{name}{suffix}",
                run_finetuning,
                cfg,
                os.path.join(runs, f"coco_{name}{suffix}"),
                init_checkpoint=backbones.get(name, ""),
            )
            scores[name] = round(result["eval"]["mAP"], 4)
            logging.info(
                "COCO-like fine-tuning on %d labelled scenes from %s: mAP %.4f",
                count,
                name,
                scores[name],
            )
    detection = {}
    if size.detection_steps:
        sources = {name: backbones[name] for name in (*arms, "supervised")}
        detection = ssl_detection.detection_arms(
            work_dir, size.detection_size(), {**sources, "scratch": ""}, timed
        )
    return {
        "benchmark": "ssl",
        "seed": size.seed,
        "probe_top1": probe_top1,
        "coco_mAP": coco_map,
        "coco_mAP_few_labels": few_labels,
        "detection": detection,
        "targets": {m: judge_targets(probe_top1, coco_map, m, few_labels, detection) for m in arms},
        "ssl_final": final_logs,
        "seconds": seconds,
        "reused": reused,
        "size": dataclasses.asdict(size),
        "runtime": {m: recorded_runtime(backbones[m]) for m in (*arms, "supervised")},
    }


def recorded_runtime(run_dir: str) -> dict:
    """Where a pretraining's figures come from: the hardware and the precision/XLA its run
    chose (`autotune.resolve`'s decision, from the run's runtime.json), plus `resumes` when parts
    of the run ran elsewhere (run_setup.record_runtime)."""
    from transfer_tf.training.run_setup import RUNTIME_FILE, RUNTIME_KEYS

    with open(os.path.join(run_dir, RUNTIME_FILE)) as f:
        decision = json.load(f)
    out = {key: decision.get(key) for key in RUNTIME_KEYS}
    if decision.get("resumes"):
        out["resumes"] = [{key: r.get(key) for key in RUNTIME_KEYS} for r in decision["resumes"]]
    return out


def with_train_shards(cfg: ExperimentConfig, pattern: str, count: int) -> ExperimentConfig:
    """`cfg` fine-tuning on the `count` examples of `pattern` instead (same val split, steps)."""
    out = to_dict(cfg)
    out["data"].update(train_pattern=pattern, num_train_examples=count)
    return config_from_dict(out)
