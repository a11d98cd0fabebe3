"""Does transfer pay off on real photographs? The shipped COCO recipe vs probe, fine-tune, scratch.

The data (`data.photo_sets`): an ImageNet-layout set whose classes are real photographs (random
crops of each) and a COCO-layout multi-label set of crops of the first `coco_classes` of them
pasted onto the others (exact boxes, some images empty), both written as raw dumps and turned into
shards by the project's builders (`build_imagenet`, `build_coco`: what
pipelines/make_imagenet_tfrecords and make_coco_tfrecords run). Then, with the library entry
points the binaries call (`run_pretraining`, `run_finetuning`):

  pretrain        configs/imagenet_resnet50.yaml's recipe on the ImageNet-layout set (top-1 on
                  its val split is reported)
  shipped         configs/coco_multilabel_resnet50.yaml exactly as shipped, overriding only the
                  data (patterns, class/example counts, image size) and the runtime (model size,
                  batch, one device, precision): its phases, LRs (per 256 images, so scaled
                  to the benchmark's batch) and optimizer are the product's
  linear_probe    pretrained backbone frozen (BN in inference mode), the head trains, LR 0.1 cosine
  full_finetune   pretrained, everything trains: the scratch recipe (LR 0.1, warmup 10 %, cosine)
  scratch         random initialisation, the same recipe
The arms' LR 0.1 is the effective value at the benchmark's batch (written as
`base_learning_rate: 0.1 * 256 / batch` under SGD).

Every transfer arm trains exactly as many steps as the shipped recipe resolves to on this data
(equal budgets, same batch and data). `extra_arms` adds named variants of the shipped recipe (its
config plus `--set`-style overrides) for measuring candidates. Results: mAP / F1 per arm.

Example:
    result = compare_on_photos("/tmp/bench_photos", "/tmp/photos", PhotoBenchmarkSize())
    result["runs"]["shipped"]["mAP"] - result["runs"]["scratch"]["mAP"]
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

from absl import logging

from transfer_tf.benchmarks.transfer import (
    COCO_MANIFESTS,
    IMAGENET_MANIFESTS,
    build_imagenet_shards,
    is_built,
)
from transfer_tf.benchmarks.transfer_photos_summary import kernel_norm_growth
from transfer_tf.config import ExperimentConfig, load_config
from transfer_tf.data.builders import build_coco
from transfer_tf.datagen import photos as photo_sets
from transfer_tf.training.schedules import base_learning_rate_for

ARMS = ("shipped", "linear_probe", "full_finetune", "scratch")
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs")
PRETRAIN_CONFIG = os.path.join(CONFIG_DIR, "imagenet_resnet50.yaml")
SHIPPED_CONFIG = os.path.join(CONFIG_DIR, "coco_multilabel_resnet50.yaml")
# Effective LR of the probe, full fine-tune and scratch arms at the benchmark's batch.
ARM_LEARNING_RATE = 0.1
# Raw COCO category ids (with gaps, as COCO's); object photograph i is category _IDS[i].
_IDS = (1, 3, 4, 7, 9, 13, 18, 22, 25, 31, 35, 41)


@dataclass(frozen=True)
class PhotoBenchmarkSize:
    """Sizes of the comparison. Defaults: ~25 min per seed on 2 busy CPU cores."""

    model: str = "resnet18"
    image_size: int = 32
    batch_size: int = 32
    mixed_precision: str = "none"
    # ImageNet-layout set: every photograph is a class.
    train_per_class: int = 60
    val_per_class: int = 10
    pretrain_epochs: float = 6.0
    # The pretraining recipe (configs/imagenet_resnet50.yaml, or e.g. its Adam variant) and its
    # peak LR at this batch: None = the recipe's own base_learning_rate (per 256 images, scaled
    # to the batch). Before issue 29 this was 0.2 at batch 32, 16x the recipe's 0.0125, which
    # inflated the stem's kernel norm ~15x (BENCHMARKS.md).
    pretrain_config: str = ""
    pretrain_peak_lr: float | None = None
    # COCO-layout set: the first coco_classes photographs are objects, the rest backgrounds.
    coco_classes: int = 8
    coco_train_images: int = 240
    coco_val_images: int = 120
    # Raw image sides are drawn from [2, 3] x image_size. The seed draws the data (crops, scenes)
    # and the training runs.
    seed: int = 0
    arms: tuple[str, ...] = ARMS
    # name -> overrides of the shipped config, e.g. {"ld07": ("transfer.layer_decay=0.7",)}.
    extra_arms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # name -> another transfer config file run on the same data and runtime (e.g. the Adam one).
    extra_arm_configs: dict[str, str] = field(default_factory=dict)
    # Overrides of the pretraining config (e.g. stronger augmentation).
    pretrain_overrides: tuple[str, ...] = ()
    # Side of the COCO-layout transfer runs (None = image_size, the pretraining side). The raw
    # scenes are the same at any value: only the input resolution of the transfer changes.
    finetune_image_size: int | None = None
    # More photographs as pretraining classes only (the COCO-layout task is unchanged): a larger
    # source for the same target.
    extra_pretrain_photo_dir: str = ""
    # Multiplies the shipped recipe's phase lengths (0.5 / 1 / 2 / 4: 45 / 90 / 180 / 360 steps
    # on 240 scenes at batch 32); every arm trains the resulting budget.
    budget_factor: float = 1.0


# Of the wheels' photographs, these are the COCO backgrounds (the motorcycles are a stereo pair,
# so neither may be an object class while the other is a background). Any other folder: the
# photographs after the first coco_classes (sorted) are the backgrounds.
BACKGROUNDS = ("motorcycle_left", "motorcycle_right", "hubble_deep_field")


def _is_background(name: str) -> bool:
    return os.path.splitext(name)[0] in BACKGROUNDS


def _raw_range(size: PhotoBenchmarkSize) -> tuple[int, int]:
    return 2 * size.image_size, 3 * size.image_size


def _coco_variant(size: PhotoBenchmarkSize) -> str:
    """'' for the default COCO-layout set, else a suffix naming its size: other set sizes get
    their own shards and runs beside the default ones and share the seed's pretraining."""
    default = PhotoBenchmarkSize()
    if (size.coco_train_images, size.coco_val_images) == (
        default.coco_train_images,
        default.coco_val_images,
    ):
        return ""
    return f"_n{size.coco_train_images}v{size.coco_val_images}"


def run_name(size: PhotoBenchmarkSize, arm: str) -> str:
    """The run dir name of `arm`: one per seed, labelled set and budget, so a sweep over
    `coco_train_images` or `budget_factor` in one work_dir reuses the seed's pretraining."""
    budget = "" if size.budget_factor == 1.0 else f"_b{size.budget_factor:g}"
    return f"{arm}{_coco_variant(size)}{budget}_s{size.seed}"


def coco_raw_dir(work_dir: str, size: PhotoBenchmarkSize, split: str) -> str:
    """The raw COCO-layout dump (`images/`, `instances.json`) of `split` ("train" or "val")."""
    return os.path.join(work_dir, f"data_s{size.seed}", "raw", f"coco_{split}{_coco_variant(size)}")


def prepare_data(work_dir: str, photo_dir: str, size: PhotoBenchmarkSize) -> dict:
    """Writes the raw dumps and builds their shards once (reused by later calls: same seed)."""
    base = os.path.join(work_dir, f"data_s{size.seed}")  # each seed its own crops and scenes
    raw, tfr = os.path.join(base, "raw"), os.path.join(base, "tfrecords")
    variant = _coco_variant(size)
    inet_out, coco_out = os.path.join(tfr, "imagenet"), os.path.join(tfr, f"coco{variant}")
    names = sorted(
        n for n in os.listdir(photo_dir) if n.lower().endswith(photo_sets.PHOTO_SUFFIXES)
    )
    # Backgrounds last: the photographs that are no COCO class (load_photos' order is sorted).
    order = sorted(range(len(names)), key=lambda i: (_is_background(names[i]), names[i]))
    loaded = photo_sets.load_photos(photo_dir)
    photos = [loaded[i] for i in order]
    names = [names[i] for i in order]
    classes = min(size.coco_classes, len(photos) - 1, len(_IDS))
    if classes < 2:
        raise ValueError(f"photo_dir {photo_dir}: need >= 3 photographs, found {len(photos)}")
    pre_photos, pre_names = list(photos), list(names)
    if size.extra_pretrain_photo_dir:
        extra = sorted(
            n
            for n in os.listdir(size.extra_pretrain_photo_dir)
            if n.lower().endswith(photo_sets.PHOTO_SUFFIXES)
        )
        pre_photos += photo_sets.load_photos(size.extra_pretrain_photo_dir)
        pre_names += extra
    if not is_built(inet_out, *IMAGENET_MANIFESTS):
        inet = photo_sets.write_photo_imagenet(
            os.path.join(raw, "imagenet"),
            pre_photos,
            names=[os.path.splitext(n)[0] for n in pre_names],
            train_per_class=size.train_per_class,
            val_per_class=size.val_per_class,
            image_size_range=_raw_range(size),
            seed=size.seed,
        )
        build_imagenet_shards(inet, inet_out, size.seed)
    if not is_built(coco_out, *COCO_MANIFESTS):
        for split, n, first in (
            ("coco_train", size.coco_train_images, 1),
            ("coco_val", size.coco_val_images, 100_001),
        ):
            coco = photo_sets.write_photo_coco(
                coco_raw_dir(work_dir, size, split.split("_")[1]),
                photos[:classes],
                photos[classes:],
                category_ids=_IDS[:classes],
                names=[os.path.splitext(n)[0] for n in names[:classes]],
                num_images=n,
                image_size_range=_raw_range(size),
                split=split,
                seed=size.seed,
                first_image_id=first,
            )
            prefix = os.path.join(coco_out, split.split("_")[1])
            build_coco([coco.image_dir], coco.annotations_file, prefix, num_shards=2)
    return {
        "imagenet": inet_out,
        "coco": coco_out,
        "pretrain_classes": len(pre_photos),
        "coco_classes": classes,
        "photos": pre_names,
    }


def _runtime(size: PhotoBenchmarkSize) -> list[str]:
    return [
        f"seed={size.seed}",
        f"model.name={size.model}",
        f"train.global_batch_size={size.batch_size}",
        "train.strategy=one_device",
        f"train.mixed_precision={size.mixed_precision}",
        "train.xla=false",
        "train.steps_per_execution=1",
        "train.checkpoint_every_steps=100000",
        "train.keep_checkpoints=1",  # at 5 a 3-seed ResNet-50 comparison filled 20 GB
        "train.log_every_steps=50",
        "train.eval_every_epochs=0",
        "data.shuffle_buffer=2000",
    ]


def pretrain_config(size: PhotoBenchmarkSize, dirs: dict) -> ExperimentConfig:
    """The pretraining recipe (`size.pretrain_config`, default configs/imagenet_resnet50.yaml) on
    the photo set: its augmentation, optimizer and LR, the data, a short length, a warmup of at
    most one epoch (the recipe's 5 of 90 epochs would be most of a 6-epoch run)."""
    from transfer_tf.training.schedules import base_learning_rate_for

    d = dirs["imagenet"]
    path = size.pretrain_config or PRETRAIN_CONFIG
    recipe = load_config(path).train
    lr = []
    if size.pretrain_peak_lr is not None:
        base = base_learning_rate_for(size.pretrain_peak_lr, size.batch_size, recipe.optimizer)
        lr = [f"train.base_learning_rate={base}"]
    return load_config(
        path,
        [
            *_runtime(size),
            f"data.train_pattern={d}/train-*",
            f"data.eval_pattern={d}/validation-*",
            f"data.num_classes={dirs['pretrain_classes']}",
            f"data.num_train_examples={dirs['pretrain_classes'] * size.train_per_class}",
            f"data.num_eval_examples={dirs['pretrain_classes'] * size.val_per_class}",
            f"data.image_size={size.image_size}",
            f"train.epochs={size.pretrain_epochs}",
            f"train.warmup_epochs={min(recipe.warmup_epochs, 1.0)}",
            *lr,
            "train.label_smoothing=0",
            *size.pretrain_overrides,
        ],
    )


def coco_data_overrides(size: PhotoBenchmarkSize, dirs: dict) -> list[str]:
    """The data keys of the COCO-layout set (what 'no overrides but the data' may change)."""
    d = dirs["coco"]
    return [
        f"data.train_pattern={d}/train-*",
        f"data.eval_pattern={d}/val-*",
        f"data.label_map_file={d}/label_map.json",
        f"data.num_classes={dirs['coco_classes']}",
        f"data.num_train_examples={size.coco_train_images}",
        f"data.num_eval_examples={size.coco_val_images}",
        f"data.image_size={size.finetune_image_size or size.image_size}",
    ]


def _budget_overrides(size: PhotoBenchmarkSize, path: str = SHIPPED_CONFIG) -> list[str]:
    """The phase lengths of the config at `path` times `size.budget_factor` (none at 1)."""
    if size.budget_factor == 1.0:
        return []
    out = []
    for i, phase in enumerate(load_config(path).transfer.phases):
        if phase.steps > 0:
            out.append(
                f"transfer.phases.{i}.steps={max(1, round(phase.steps * size.budget_factor))}"
            )
        else:
            out.append(f"transfer.phases.{i}.epochs={phase.epochs * size.budget_factor}")
    return out


def shipped_config(
    size: PhotoBenchmarkSize, dirs: dict, extra: tuple[str, ...] = ()
) -> ExperimentConfig:
    """The shipped COCO recipe on this data (plus `extra` overrides for a variant arm)."""
    return load_config(
        SHIPPED_CONFIG,
        [*_runtime(size), *coco_data_overrides(size, dirs), *_budget_overrides(size), *extra],
    )


def is_scratch_arm(arm: str) -> bool:
    """Arms named `scratch` or `scratch_*` start from random weights; every other arm from the
    pretrained backbone."""
    return arm == "scratch" or arm.startswith("scratch_")


def arm_config(size: PhotoBenchmarkSize, dirs: dict, arm: str, budget: int) -> ExperimentConfig:
    """The config of `arm` at `budget` steps (see module doc)."""
    if arm == "shipped":
        return shipped_config(size, dirs)
    if arm in size.extra_arms:
        return shipped_config(size, dirs, tuple(size.extra_arms[arm]))
    if arm in size.extra_arm_configs:
        path = size.extra_arm_configs[arm]
        overrides = [
            *_runtime(size),
            *coco_data_overrides(size, dirs),
            *_budget_overrides(size, path),
        ]
        return load_config(path, overrides)
    # The arms train at 0.1 at the benchmark's batch (what BENCHMARKS.md measured), written per
    # 256 images for the shipped optimizer.
    optimizer = shipped_config(size, dirs).transfer.optimizer
    lr = base_learning_rate_for(ARM_LEARNING_RATE, size.batch_size, optimizer)
    if arm == "linear_probe":
        phase = (
            f"{{name: probe, trainable: head, steps: {budget}, base_learning_rate: {lr!r}, "
            "frozen_batchnorm: inference}"
        )
    elif arm in ("full_finetune", "scratch"):
        phase = (
            f"{{name: {arm}, trainable: all, steps: {budget}, base_learning_rate: {lr!r}, "
            f"warmup_steps: {max(1, budget // 10)}}}"
        )
    else:
        raise ValueError(f"unknown arm {arm!r} (expected {ARMS} or an extra arm)")
    # The shipped optimizer, weight decay and data settings; only the phases differ.
    return shipped_config(size, dirs, (f"transfer.phases=[{phase}]",))


def compare_on_photos(work_dir: str, photo_dir: str, size: PhotoBenchmarkSize) -> dict:
    """Runs the comparison (see module doc) under `work_dir`; returns
    {"pretrain": {"top_1_accuracy", "steps", "seconds"}, "runs": {arm: {"mAP", "micro_F1",
     "macro_F1", "steps", "train_seconds"}}, "budget_steps", "size", "data"}.
    Data and finished runs in `work_dir` are reused (delete it for a fresh measurement)."""
    import keras

    from transfer_tf.training.evaluation import evaluate_run
    from transfer_tf.training.pretrain import run_pretraining
    from transfer_tf.training.run_setup import plan_steps
    from transfer_tf.transfer import phases as phases_lib
    from transfer_tf.transfer import schedule
    from transfer_tf.transfer.finetune import run_finetuning

    t0 = time.perf_counter()
    dirs = prepare_data(work_dir, photo_dir, size)
    data_seconds = time.perf_counter() - t0
    pretrain_dir = os.path.join(work_dir, "runs", f"pretrain_s{size.seed}")
    t0 = time.perf_counter()
    pre_cfg = pretrain_config(size, dirs)
    run_pretraining(pre_cfg, pretrain_dir)
    pretrain_seconds = time.perf_counter() - t0
    keras.backend.clear_session()
    pre_eval = evaluate_run(pretrain_dir)
    keras.backend.clear_session()
    norm_growth = kernel_norm_growth(pretrain_dir)
    # Equal budgets: every arm trains as long as the shipped recipe does on this data.
    budget = schedule.total_steps(phases_lib.resolve_phases(shipped_config(size, dirs)))
    runs = {}
    for arm in (*size.arms, *size.extra_arms, *size.extra_arm_configs):
        cfg = arm_config(size, dirs, arm, budget)
        steps = schedule.total_steps(phases_lib.resolve_phases(phases_lib.preset_config(cfg)))
        if steps != budget:
            raise ValueError(f"arm {arm}: {steps} steps, the budget is {budget} (equal budgets)")
        t0 = time.perf_counter()
        result = run_finetuning(
            cfg,
            os.path.join(work_dir, "runs", run_name(size, arm)),
            init_checkpoint="" if is_scratch_arm(arm) else pretrain_dir,
        )
        m = result["eval"]
        runs[arm] = {
            "mAP": round(m["mAP"], 4),
            "micro_F1": round(m["micro_F1"], 4),
            "macro_F1": round(m["macro_F1"], 4),
            "steps": steps,
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        logging.info("%s: %s", arm, runs[arm])
        keras.backend.clear_session()
    return {
        "benchmark": "transfer_photos",
        "pretrain": {
            "top_1_accuracy": round(float(pre_eval["top_1_accuracy"]), 4),
            "steps": plan_steps(pre_cfg)[1],
            "seconds": round(pretrain_seconds, 1),
            "kernel_norm_growth": norm_growth,
        },
        "runs": runs,
        "budget_steps": budget,
        "data": {k: v for k, v in dirs.items() if k not in ("imagenet", "coco")},
        "data_seconds": round(data_seconds, 1),
        "size": dataclasses.asdict(size),
    }
