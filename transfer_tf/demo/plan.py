"""What the demo runs: its folder layout, the per-stage experiment configs, the binary commands.

The demo config (`configs/demo.yaml` + `--set`) describes the pretraining experiment; the
fine-tuning experiments are derived from it (COCO schema, `transfer.phases`), and the from-scratch
baseline gets the same step budget as one `all` phase. Each stage's resolved config is written to
`WORK/configs/<stage>.yaml` and handed to the real binary with `--config`, so every stage can be
rerun by hand with the command printed in the report.

Example:
    paths = DemoPaths.under("demo_out")
    stages = plan_stages(cfg, paths)   # [Stage("generate", ...), Stage("build_imagenet", ...), ...]
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass, field

from transfer_tf.config import ConfigError, ExperimentConfig, PhaseConfig, SSLConfig
from transfer_tf.datagen import shapes
from transfer_tf.demo.pretraining import pretrain_title, self_supervised, ssl_recipe


@dataclass(frozen=True)
class DemoPaths:
    """Every file and folder the demo writes, under one work dir."""

    work_dir: str

    @classmethod
    def under(cls, work_dir: str) -> DemoPaths:
        return cls(os.path.abspath(work_dir))

    def _p(self, *parts: str) -> str:
        return os.path.join(self.work_dir, *parts)

    # Folders the demo owns (cleared when a previous demo run is found in work_dir).
    @property
    def owned(self) -> tuple[str, ...]:
        return ("raw", "tfrecords", "configs", "runs", "metrics", "export", "logs", "plots")

    @property
    def marker(self) -> str:
        return self._p(".transfer_tf_demo")

    @property
    def raw_imagenet(self) -> str:
        return self._p("raw", "imagenet")

    @property
    def raw_coco_train(self) -> str:
        return self._p("raw", "coco_train")

    @property
    def raw_coco_val(self) -> str:
        return self._p("raw", "coco_val")

    @property
    def imagenet_tfrecords(self) -> str:
        return self._p("tfrecords", "imagenet")

    @property
    def coco_tfrecords(self) -> str:
        return self._p("tfrecords", "coco")

    def config(self, stage: str) -> str:
        return self._p("configs", f"{stage}.yaml")

    def run_dir(self, run: str) -> str:
        return self._p("runs", run)

    def metrics(self, run: str) -> str:
        return self._p("metrics", f"{run}.json")

    @property
    def export_dir(self) -> str:
        return self._p("export")

    def log(self, stage: str) -> str:
        return self._p("logs", f"{stage}.log")

    @property
    def plots(self) -> str:
        return self._p("plots")

    @property
    def report(self) -> str:
        return self._p("report.md")

    @property
    def summary(self) -> str:
        return self._p("summary.json")

    @property
    def sizing(self) -> str:
        return self._p("sizing.json")

    @property
    def predict_output(self) -> str:
        return self._p("metrics", "predict.json")


@dataclass
class Stage:
    """One step of the demo: binaries run as `python -m module args`, or in-process (no calls)."""

    name: str
    title: str
    # (module, args) pairs run in order, e.g. the COCO builder once per split.
    calls: list[tuple[str, list[str]]] = field(default_factory=list)
    # Stages whose outputs this one reads: if one of them did not succeed, this one is skipped.
    needs: tuple[str, ...] = ()
    # Files the stage must leave behind to count as done.
    outputs: tuple[str, ...] = ()
    # Where the stdout of the stage's last call also goes (e.g. predict --json).
    stdout_file: str | None = None

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for m, _ in self.calls))

    def commands(self) -> list[str]:
        """The shell commands a user would type to rerun this stage."""
        return [
            " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])
            for module, args in self.calls
        ]


def argv(module: str, args: list[str]) -> list[str]:
    """The subprocess argv of one call, with this interpreter."""
    return [sys.executable, "-m", module, *args]


def check_demo_config(cfg: ExperimentConfig) -> None:
    """Raises ConfigError (naming the key) for demo sizes that cannot produce a demo."""
    d = cfg.demo
    positive = {
        "demo.train_per_class": d.train_per_class,
        "demo.val_per_class": d.val_per_class,
        "demo.coco_train_images": d.coco_train_images,
        "demo.coco_val_images": d.coco_val_images,
        "demo.train_shards": d.train_shards,
        "demo.validation_shards": d.validation_shards,
        "demo.num_workers": d.num_workers,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{key}': expected a positive value, got {value}")
    for key, (lo, hi), least in (
        ("demo.raw_image_size", d.raw_image_size, 16),
        ("demo.coco_image_size", d.coco_image_size, 32),
        ("demo.objects_per_image", d.objects_per_image, 1),
    ):
        if not least <= lo <= hi:
            raise ConfigError(f"config key '{key}': expected [min, max] with {least} <= min <= max")
    if cfg.data.num_classes > shapes.MAX_CLASSES:
        raise ConfigError(
            f"config key 'data.num_classes': the demo vocabulary has at most "
            f"{shapes.MAX_CLASSES} classes, got {cfg.data.num_classes}"
        )
    if len(d.coco_category_ids) > shapes.MAX_CLASSES:
        raise ConfigError(
            f"config key 'demo.coco_category_ids': at most {shapes.MAX_CLASSES} categories"
        )
    if d.time_budget_s < 0:
        raise ConfigError(
            f"config key 'demo.time_budget_s': expected seconds >= 0 (0 = off), got {d.time_budget_s}"
        )
    if not cfg.transfer.phases:
        raise ConfigError("config key 'transfer.phases': the demo needs an explicit schedule")
    if d.train_per_class * cfg.data.num_classes < cfg.train.global_batch_size:
        raise ConfigError(
            "config key 'train.global_batch_size': larger than the generated train set "
            f"({d.train_per_class} x {cfg.data.num_classes} images)"
        )


def _replace(cfg: ExperimentConfig, name: str, **data_fields: object) -> ExperimentConfig:
    out = copy.deepcopy(cfg)
    out.name = name
    out.data = dataclasses.replace(out.data, **data_fields)
    return out


def pretrain_config(cfg: ExperimentConfig, paths: DemoPaths) -> ExperimentConfig:
    """The ImageNet-like pretraining experiment over the demo's shards (self-supervised, labels
    ignored, with `demo.pretraining: simclr | byol`)."""
    tfr = paths.imagenet_tfrecords
    if self_supervised(cfg):
        cfg = ssl_recipe(cfg)
    return _replace(
        cfg,
        f"{cfg.name}_pretrain",
        schema="classification",
        train_pattern=os.path.join(tfr, "train-*"),
        eval_pattern=os.path.join(tfr, "validation-*"),
        label_offset=1,  # the builder's default, as in the public shards
        label_names_file=os.path.join(tfr, "label_names.txt"),
        label_map_file="",
        num_train_examples=cfg.data.num_classes * cfg.demo.train_per_class,
        num_eval_examples=cfg.data.num_classes * cfg.demo.val_per_class,
    )


def coco_eval_pattern(paths: DemoPaths) -> str:
    """The COCO-like val shards (given to the evaluate stages with --eval_pattern)."""
    return os.path.join(paths.coco_tfrecords, "val-*")


def finetune_config(cfg: ExperimentConfig, paths: DemoPaths) -> ExperimentConfig:
    """The COCO-like multi-label transfer experiment (schedule = `cfg.transfer.phases`).

    No `data.eval_pattern`: the fine-tuning job would evaluate its final model, which the
    evaluate stage does again from the checkpoint (`--eval_pattern`); once is enough on a CPU.
    """
    tfr = paths.coco_tfrecords
    cfg = dataclasses.replace(cfg, ssl=SSLConfig())  # the pretraining method is not fine-tuning's
    # train.epochs / train_steps are the pretraining's length: the phases carry fine-tuning's
    # (fine-tuning rejects them beside transfer.phases: config_unread.finetune_unread_problem).
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=0.0, train_steps=0))
    return _replace(
        cfg,
        f"{cfg.name}_finetune",
        schema="coco",
        train_pattern=os.path.join(tfr, "train-*"),
        eval_pattern="",
        label_map_file=os.path.join(tfr, "label_map.json"),
        label_names_file=os.path.join(tfr, "label_names.txt"),
        num_classes=len(cfg.demo.coco_category_ids),
        num_train_examples=cfg.demo.coco_train_images,
        num_eval_examples=cfg.demo.coco_val_images,
    )


def phase_steps(cfg: ExperimentConfig, phase: PhaseConfig) -> int:
    """Steps of one phase, with the transfer schedule's own epochs -> steps rule."""
    from transfer_tf.transfer.phases import schedule_steps

    return schedule_steps(cfg, phase.epochs, phase.steps, f"transfer.phases[{phase.name}]")


def scratch_config(finetune: ExperimentConfig) -> ExperimentConfig:
    """The from-scratch baseline: everything trains for the fine-tuning schedule's total steps."""
    out = copy.deepcopy(finetune)
    out.name = finetune.name.replace("_finetune", "") + "_scratch"
    total = sum(phase_steps(finetune, p) for p in finetune.transfer.phases)
    # Per 256 images like the phases' (same batch and optimizer, so the same effective LR).
    lr = out.demo.scratch_base_learning_rate or max(
        p.base_learning_rate for p in finetune.transfer.phases
    )
    out.transfer.phases = [
        PhaseConfig(
            name="scratch",
            trainable="all",
            steps=total,
            base_learning_rate=lr,
            lr_schedule="cosine",
            warmup_steps=max(1, total // 10),
        )
    ]
    out.transfer.preset = ""
    return out


COCO_VAL_FIRST_ID = 100_001  # val image ids follow train's without overlap, as in COCO


def predict_image(paths: DemoPaths) -> str:
    """The generated image the demo sends through the export: the first COCO-like val image."""
    return os.path.join(paths.raw_coco_val, "images", f"{COCO_VAL_FIRST_ID:012d}.jpg")


def plan_stages(cfg: ExperimentConfig, paths: DemoPaths) -> list[Stage]:
    """The demo's stages in order, with the exact flags of each binary."""
    d, demo = paths, cfg.demo
    workers = f"--num_workers={demo.num_workers}"
    coco_calls = []
    for split, raw, shards in (
        ("train", d.raw_coco_train, demo.train_shards),
        ("val", d.raw_coco_val, demo.validation_shards),
    ):
        coco_calls.append(
            (
                "pipelines.make_coco_tfrecords",
                [
                    f"--image_dir={os.path.join(raw, 'images')}",
                    f"--object_annotations_file={os.path.join(raw, 'instances.json')}",
                    f"--output_file_prefix={os.path.join(d.coco_tfrecords, split)}",
                    f"--num_shards={shards}",
                    workers,
                ],
            )
        )
    stages = [
        Stage("generate", "Generate ImageNet-like and COCO-like raw datasets"),
        Stage(
            "build_imagenet",
            "Convert the ImageNet-like tree to TFRecords",
            [
                (
                    "pipelines.make_imagenet_tfrecords",
                    [
                        f"--raw_data_dir={d.raw_imagenet}",
                        f"--output_dir={d.imagenet_tfrecords}",
                        f"--synset_names_file={os.path.join(d.raw_imagenet, 'synset_names.txt')}",
                        f"--train_shards={demo.train_shards}",
                        f"--validation_shards={demo.validation_shards}",
                        f"--seed={cfg.seed}",
                        workers,
                    ],
                )
            ],
            needs=("generate",),
            outputs=(os.path.join(d.imagenet_tfrecords, "label_names.txt"),),
        ),
        Stage(
            "build_coco",
            "Convert the COCO-like train and val sets to TFRecords",
            coco_calls,
            needs=("generate",),
            outputs=(os.path.join(d.coco_tfrecords, "label_map.json"),),
        ),
    ]
    if demo.time_budget_s > 0:
        stages.append(
            Stage(
                "size",
                f"Size pretraining to the {demo.time_budget_s:.0f} s time budget (measured step)",
                needs=("build_imagenet",),
                outputs=(d.sizing,),
            )
        )
    for run in ("pretrain", "finetune", "scratch"):
        if run == "pretrain":
            title = pretrain_title(cfg)
            call = ("pipelines.pretrain", [f"--config={d.config(run)}"])
            needs: tuple[str, ...] = ("build_imagenet",)
        elif run == "finetune":
            title = "Fine-tune the pretrained backbone on COCO-like (freeze -> unfreeze)"
            call = (
                "pipelines.finetune",
                [f"--config={d.config(run)}", f"--init_checkpoint={d.run_dir('pretrain')}"],
            )
            needs = ("build_coco", "pretrain")
        else:
            title = "Train the same model on COCO-like from scratch, same step budget"
            call = ("pipelines.finetune", [f"--config={d.config(run)}"])
            needs = ("build_coco",)
        call[1].append(f"--model_dir={d.run_dir(run)}")
        stages.append(
            Stage(
                run,
                title,
                [call],
                needs=needs,
                outputs=(os.path.join(d.run_dir(run), "config.yaml"),),
            )
        )
        stages.append(
            Stage(
                f"evaluate_{run}",
                f"Evaluate the {run} run",
                [
                    (
                        "pipelines.evaluate",
                        [f"--model_dir={d.run_dir(run)}", f"--output={d.metrics(run)}"]
                        + ([] if run == "pretrain" else [f"--eval_pattern={coco_eval_pattern(d)}"]),
                    )
                ],
                needs=(run,),
                outputs=(d.metrics(run),),
            )
        )
    stages += [
        Stage(
            "export",
            "Export the fine-tuned model as a SavedModel for TF Serving",
            [
                (
                    "pipelines.export",
                    [f"--model_dir={d.run_dir('finetune')}", f"--export_dir={d.export_dir}"],
                )
            ],
            needs=("finetune",),
        ),
        Stage(
            "predict",
            "Predict one generated image through the SavedModel",
            [("pipelines.predict", [f"--saved_model={d.export_dir}", "--json", predict_image(d)])],
            needs=("export",),
            outputs=(d.predict_output,),
            stdout_file=d.predict_output,
        ),
    ]
    return stages
