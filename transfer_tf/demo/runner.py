"""`run_demo`: generated data through every stage of the system, then a report.

Stages run in order, their jobs in-process or as subprocesses (see stages.py). A stage whose
binary is not installed is listed as unavailable, a stage whose inputs failed is skipped, and
nothing is faked: the report only shows what the stages wrote.

Example:
    outcome = run_demo(load_config("configs/demo.yaml"), "demo_out", available=lambda m: True)
    outcome.ok, outcome.report   # True, "/abs/demo_out/report.md"
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from transfer_tf import models
from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.config import ExperimentConfig, save_config
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.datagen import shapes
from transfer_tf.demo import plan
from transfer_tf.demo.detection import demo_stages, detection_configs
from transfer_tf.demo.report import ReportContext, headline, write_report
from transfer_tf.demo.segmentation import segmentation_configs, with_segmentation
from transfer_tf.demo.stages import StageResult, run_stage
from transfer_tf.errors import UsageError


@dataclass
class DemoOutcome:
    """Where the demo's outputs are and whether every stage succeeded."""

    ok: bool
    work_dir: str
    headline: list[str]  # main metrics per evaluated run
    report: str
    plots: list[str]
    results: list[StageResult]
    seconds: float


def prepare_work_dir(paths: plan.DemoPaths) -> None:
    """Creates the work dir, or clears a previous demo's outputs from it.

    A previous demo is recognised by its marker file; any other non-empty folder is refused
    rather than written into (the demo deletes its own folders on a rerun).
    """
    work = paths.work_dir
    if os.path.isdir(work) and os.listdir(work) and not os.path.exists(paths.marker):
        raise UsageError(
            f"--work_dir {work} is not empty and holds no previous demo: give a new or empty folder"
        )
    os.makedirs(work, exist_ok=True)
    for name in paths.owned:
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    for path in (paths.report, paths.summary, paths.sizing):
        if os.path.exists(path):
            os.remove(path)
    # evaluate/predict write their JSON into metrics/, which must exist.
    os.makedirs(os.path.dirname(paths.metrics("pretrain")), exist_ok=True)
    with open(paths.marker, "w") as f:
        f.write("written by pipelines/demo.py; the demo clears this folder's outputs on a rerun\n")


def generate_data(cfg: ExperimentConfig, paths: plan.DemoPaths) -> list[str]:
    """Writes the three raw datasets; returns one description line per dataset."""
    d = cfg.demo
    inet = shapes.write_imagenet_like(
        paths.raw_imagenet,
        num_classes=cfg.data.num_classes,
        train_per_class=d.train_per_class,
        val_per_class=d.val_per_class,
        image_size_range=d.raw_image_size,
        seed=cfg.seed,
    )
    coco = {}
    for split, root, n, seed, first in (
        ("train", paths.raw_coco_train, d.coco_train_images, cfg.seed, 1),
        ("val", paths.raw_coco_val, d.coco_val_images, cfg.seed + 1, plan.COCO_VAL_FIRST_ID),
    ):
        coco[split] = shapes.write_coco_like(
            root,
            num_images=n,
            category_ids=d.coco_category_ids,
            objects_per_image=d.objects_per_image,
            seed=seed,
            image_size_range=d.coco_image_size,
            first_image_id=first,
        )
    rel = os.path.relpath
    return [
        f"ImageNet-like (`{rel(inet.root, paths.work_dir)}`): {len(inet.wnids)} classes "
        f"({', '.join(inet.class_names[:4])}, ...), {inet.num_train} train / {inet.num_val} val "
        f"JPEGs of {d.raw_image_size[0]}-{d.raw_image_size[1]} px",
        *(
            f"COCO-like {split} (`{rel(c.root, paths.work_dir)}`): {c.num_images} images, "
            f"{c.num_annotations} objects, {len(c.category_ids)} categories with ids "
            f"{list(c.category_ids)}"
            for split, c in coco.items()
        ),
    ]


def write_coco_label_names(paths: plan.DemoPaths) -> None:
    """`label_names.txt` (class-index order) from the builder's label_map.json, for exports."""
    label_map = read_label_map(os.path.join(paths.coco_tfrecords, "label_map.json"))
    with open(os.path.join(paths.coco_tfrecords, "label_names.txt"), "w") as f:
        f.writelines(f"{name}\n" for name in label_map.display_names())


def write_stage_configs(cfg: ExperimentConfig, paths: plan.DemoPaths) -> dict[str, str]:
    """Writes each training stage's resolved config; returns {stage: problem} for those it could not."""
    problems = {}
    pretrain = plan.pretrain_config(cfg, paths)
    finetune = plan.finetune_config(cfg, paths)
    os.makedirs(os.path.dirname(paths.config("pretrain")), exist_ok=True)
    save_config(pretrain, paths.config("pretrain"))
    save_config(finetune, paths.config("finetune"))
    try:
        save_config(plan.scratch_config(finetune), paths.config("scratch"))
    except ImportError as e:  # the transfer schedule (its step rule) is not built yet
        problems["scratch"] = f"cannot size the scratch budget: {e}"
    if cfg.demo.detection:
        for run, run_cfg in detection_configs(cfg, paths).items():
            save_config(run_cfg, paths.config(run))
    if cfg.demo.segmentation:
        for run, run_cfg in segmentation_configs(cfg, paths).items():
            save_config(run_cfg, paths.config(run))
    return problems


def _predict_truth(paths: plan.DemoPaths) -> list[str]:
    with open(os.path.join(paths.raw_coco_val, "instances.json")) as f:
        doc = json.load(f)
    names = {c["id"]: c["name"] for c in doc["categories"]}
    return sorted(
        {
            names[a["category_id"]]
            for a in doc["annotations"]
            if a["image_id"] == plan.COCO_VAL_FIRST_ID
        }
    )


def _size_stage(
    cfg: ExperimentConfig,
    paths: plan.DemoPaths,
    stage: plan.Stage,
    elapsed_s: float,
    echo: Callable[[str], None],
) -> StageResult:
    """Measures the pretraining step and sizes its epochs (budget.py); a failure keeps the
    configured epochs and is reported, like any stage's."""
    from transfer_tf.demo import budget, inprocess

    t0 = time.monotonic()
    log_path = paths.log(stage.name)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:

        def write(line: str) -> None:
            log.write(line + "\n")
            log.flush()
            if " ms/step" in line or "time budget" in line or "failed" in line:
                echo(f"  [{stage.name}] {line.split('] ', 1)[-1]}")

        try:
            with inprocess.captured_logs(write):
                record = budget.size_pretraining(cfg, paths, elapsed_s)
        except Exception as e:  # noqa: BLE001  (reported; pretraining keeps its configured epochs)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return StageResult(
                stage.name, stage.title, "failed", time.monotonic() - t0, log=log_path,
                detail=f"{type(e).__name__}: {first}; pretraining keeps train.epochs",
            )  # fmt: skip
        finally:
            models.release_models()
    detail = f"pretrain {record['epochs']:g} of {record['configured_epochs']:g} epochs"
    return StageResult(
        stage.name, stage.title, "ok", time.monotonic() - t0, log=log_path, detail=detail
    )


def run_demo(
    cfg: ExperimentConfig,
    work_dir: str,
    *,
    available: Callable[[str], bool],
    echo: Callable[[str], None] = print,
) -> DemoOutcome:
    """Runs the whole demo under `work_dir`; never raises for a failing stage (it is reported).

    `available(module)` says whether a binary exists (the caller knows where binaries live; only
    an in-process stage imports its binary, inprocess.py).

    Raises:
      ConfigError / UsageError: an unusable demo config or work dir (before anything runs).
    """
    plan.check_demo_config(cfg)
    paths = plan.DemoPaths.under(work_dir)
    prepare_work_dir(paths)
    start = time.monotonic()
    config_path = os.path.join(paths.work_dir, "config.yaml")
    save_config(cfg, config_path)
    # plan.plan_stages (+ detection with demo.detection, + segmentation with demo.segmentation)
    stages = with_segmentation(cfg, paths, demo_stages(cfg, paths))
    missing = sorted({m for s in stages for m in s.modules if not available(m)})
    if missing:
        echo(f"demo: binaries not available yet (their stages will be listed, not run): {missing}")

    results: list[StageResult] = []
    status: dict[str, str] = {}
    data_lines: list[str] = []
    config_problems: dict[str, str] = {}
    for i, stage in enumerate(stages, start=1):
        elapsed = time.monotonic() - start
        echo(f"[{i}/{len(stages)}] {stage.title}  (t={elapsed:.0f}s)")
        unavailable = [m for m in stage.modules if not available(m)]
        failed_needs = [n for n in stage.needs if status.get(n) != "ok"]
        if stage.name == "generate":
            t0 = time.monotonic()
            data_lines = generate_data(cfg, paths)
            config_problems = write_stage_configs(cfg, paths)
            result = StageResult(stage.name, stage.title, "ok", time.monotonic() - t0)
        elif unavailable:
            result = StageResult(
                stage.name,
                stage.title,
                "unavailable",
                commands=stage.commands(),
                detail=f"{', '.join(unavailable)} is not built yet",
            )
        elif failed_needs:
            result = StageResult(
                stage.name,
                stage.title,
                "skipped",
                commands=stage.commands(),
                detail=f"needs {', '.join(failed_needs)}",
            )
        elif stage.name == "size":
            result = _size_stage(cfg, paths, stage, time.monotonic() - start, echo)
        elif stage.name in config_problems:
            result = StageResult(
                stage.name, stage.title, "unavailable", detail=config_problems[stage.name]
            )
        else:
            result = run_stage(
                stage, paths.log(stage.name), echo=echo, in_process=cfg.demo.in_process
            )
            if result.status == "ok" and stage.name == "build_coco":
                write_coco_label_names(paths)
            if result.status == "ok" and stage.name.startswith("evaluate_"):
                run = stage.name.removeprefix("evaluate_")
                for line in headline(paths):
                    if line.startswith(f"{run}:"):
                        echo(f"      {line}")
        status[stage.name] = result.status
        results.append(result)
        note = f": {result.detail}" if result.detail else ""
        echo(f"      -> {result.status} in {result.seconds:.1f}s{note}")

    echo(f"[report] writing {paths.report}")
    context = ReportContext(
        config_path=config_path,
        data_lines=data_lines,
        total_seconds=time.monotonic() - start,
        predict_truth=_predict_truth(paths),
        in_process=cfg.demo.in_process,
    )
    report, plots = write_report(paths, results, context)
    seconds = time.monotonic() - start
    ok = all(r.status == "ok" for r in results)
    summary = {
        "ok": ok,
        "seconds": round(seconds, 1),
        "report": report,
        "plots": plots,
        "stages": [r.to_dict() for r in results],
    }
    write_json_atomic(paths.summary, summary)
    return DemoOutcome(ok, paths.work_dir, headline(paths), report, plots, results, seconds)
