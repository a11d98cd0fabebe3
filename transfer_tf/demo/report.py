"""The demo's report: metrics from the stages' own JSON files, curves from their TensorBoard logs.

Nothing in the report is computed here: every number is read from a file a stage wrote
(`metrics/<run>.json` from pipelines/evaluate.py, `metrics/predict.json` from pipelines/predict.py,
TensorBoard event files under each run's model dir), so the report cannot disagree with the run.

Example:
    write_report(paths, results, context)            # demo_out/report.md + demo_out/plots/*.png
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from transfer_tf.atomic_io import write_text_atomic
from transfer_tf.demo.plan import DemoPaths
from transfer_tf.demo.plots import (
    TABLE_METRICS,
    Curves,
    find_metric,
    plot_comparison,
    plot_run,
    read_phases,
    read_scalars,
)
from transfer_tf.demo.stages import StageResult

RUN_TITLES = {
    "pretrain": "Pretrain (ImageNet-like, single-label)",
    "finetune": "Fine-tune from pretrained (COCO-like, multi-label)",
    "scratch": "From scratch, same budget (COCO-like, multi-label)",
}


def read_json(path: str) -> dict | None:
    """The JSON document at `path`, or None if missing or unreadable."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def headline(paths: DemoPaths) -> list[str]:
    """One line per evaluated run with its main metrics, e.g. `finetune: mAP 0.8123`."""
    lines = []
    for run in RUN_TITLES:
        doc = read_json(paths.metrics(run))
        shown = [
            f"{label} {_fmt(find_metric(doc, key))}"
            for key, label in TABLE_METRICS[:3]
            if find_metric(doc, key) is not None
        ]
        if shown:
            lines.append(f"{run}: {', '.join(shown)}")
    return lines


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}"


@dataclass
class ReportContext:
    """Facts about the run that the report states (sizes, config, timing)."""

    config_path: str
    data_lines: list[str]
    total_seconds: float
    predict_truth: list[str]  # category names actually drawn in the predicted image
    in_process: bool = False  # the jobs ran inside the demo process (demo.in_process)


def _metrics_table(paths: DemoPaths) -> tuple[list[str], dict[str, dict | None]]:
    docs = {run: read_json(paths.metrics(run)) for run in RUN_TITLES}
    keys = [
        (key, label)
        for key, label in TABLE_METRICS
        if any(find_metric(d, key) is not None for d in docs.values())
    ]
    if not keys:
        return ["No evaluation metrics were written (see the stage table)."], docs
    lines = [
        "| run | " + " | ".join(label for _, label in keys) + " | source |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for run, title in RUN_TITLES.items():
        doc = docs[run]
        cells = [_fmt(find_metric(doc, key)) for key, _ in keys]
        source = f"`metrics/{run}.json`" if doc else "not run"
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {source} |")
    return lines, docs


def _pretraining_lines(paths: DemoPaths) -> list[str]:
    """Which pretraining the demo ran (from the stage config it wrote) and, for a
    self-supervised one, its label-free eval (the evaluate stage's kNN top-1)."""
    import yaml

    try:
        with open(paths.config("pretrain")) as f:
            method = (yaml.safe_load(f).get("ssl") or {}).get("method", "supervised")
    except (OSError, yaml.YAMLError, AttributeError):
        return ["Pretraining: not recorded (no pretraining config was written)."]
    if method == "supervised":
        return ["Pretraining: **supervised** (the ImageNet-like labels, softmax cross-entropy)."]
    doc = read_json(paths.metrics("pretrain"))
    knn = find_metric(doc, "knn_top1")
    shown = (
        f"kNN top-1 (k={doc.get('knn_k', '?')}, cosine) on its validation split: {_fmt(knn)}"
        if knn is not None
        else "its kNN eval was not run"
    )
    return [
        f"Pretraining: **{method}**, self-supervised on the ImageNet-like images with their "
        f"labels ignored ({shown}); its classifier head is untrained, so the pretrain row shows "
        "kNN top-1 instead of top-1. Fine-tuning and the scratch baseline are the same as with "
        "supervised pretraining."
    ]


def _prediction_lines(paths: DemoPaths, truth: list[str]) -> list[str]:
    doc = read_json(paths.predict_output)
    if not doc or not doc.get("predictions"):
        return ["Not run (see the stage table)."]
    pred = doc["predictions"][0]
    image = pred.get("image") or pred.get("path") or "?"
    lines = [
        f"Image `{os.path.relpath(image, paths.work_dir)}` "
        f"(objects drawn in it: {', '.join(truth) or 'none'}) through "
        f"`{os.path.relpath(doc.get('saved_model', '?'), paths.work_dir)}`:",
        "",
        "| rank | class | score |",
        "|---|---|---|",
    ]
    for rank, item in enumerate(pred.get("top_k", []), start=1):
        if isinstance(item, dict):
            name, score = item.get("class", item.get("name", "?")), item.get("score")
        else:
            name, score = item[1], item[2]
        lines.append(f"| {rank} | {name} | {_fmt(score)} |")
    return lines


def _detection_lines(paths: DemoPaths, results: Sequence[StageResult]) -> list[str]:
    """The optional detection section (`demo.detection`), when its stages were planned."""
    if not any(r.name == "detect_finetune" for r in results):
        return []
    from transfer_tf.demo.detection import report_lines

    return ["## Object detection (RetinaNet)", "", *report_lines(paths, read_json), ""]


def _segmentation_lines(paths: DemoPaths, results: Sequence[StageResult]) -> list[str]:
    """The optional segmentation section (`demo.segmentation`), when its stages were planned."""
    if not any(r.name == "segment_finetune" for r in results):
        return []
    from transfer_tf.demo.segmentation import report_lines

    return ["## Semantic segmentation (Semantic-FPN)", "", *report_lines(paths, read_json), ""]


def _runtime_lines(paths: DemoPaths) -> list[str]:
    """Precision/XLA and time-budget sizing as the size stage and the pretraining job wrote them."""
    from transfer_tf.demo import budget

    lines = budget.describe(read_json(paths.sizing))
    if not lines:
        runtime = read_json(os.path.join(paths.run_dir("pretrain"), "runtime.json"))
        if not runtime:
            return ["Not recorded (the pretraining stage did not run)."]
        lines = budget.describe_runtime(runtime) + ["- No time budget (`demo.time_budget_s: 0`)."]
    return lines


def write_report(
    paths: DemoPaths, results: Sequence[StageResult], context: ReportContext
) -> tuple[str, list[str]]:
    """Writes `paths.report` (and the plots); returns its path and the plot paths."""
    plots: list[str] = []
    run_curves: dict[str, Curves] = {}
    for run, title in RUN_TITLES.items():
        run_dir = paths.run_dir(run)
        if os.path.isdir(run_dir):
            run_curves[run] = read_scalars(run_dir)
            out = os.path.join(paths.plots, f"{run}.png")
            made = plot_run(run_curves[run], title, out, read_phases(run_dir))
            if made:
                plots.append(made)
    transfer_runs = ("finetune", "scratch")
    made = plot_comparison(
        {run: run_curves.get(run, {}) for run in transfer_runs},
        {run: read_json(paths.metrics(run)) for run in transfer_runs},
        "COCO-like transfer: pretrained backbone vs scratch, same step budget",
        os.path.join(paths.plots, "transfer_comparison.png"),
        read_phases(paths.run_dir("finetune")),
    )
    if made:
        plots.append(made)

    table, _ = _metrics_table(paths)
    missing = [r for r in results if r.status != "ok"]
    lines = [
        "# transfer_tf demo report",
        "",
        f"End-to-end run on generated data in {context.total_seconds / 60:.1f} min "
        f"(config: `{os.path.relpath(context.config_path, paths.work_dir)}`).",
        "",
        *_pretraining_lines(paths),
        "",
        "## Results",
        "",
        *table,
        "",
        "Pretrain is single-label top-1/top-5 (kNN top-1 for a self-supervised pretraining) on "
        "the ImageNet-like validation split; the two "
        "COCO-like rows are multi-label mAP on the COCO-like val split at the same number of "
        "training steps (the fine-tuned one follows the `transfer.phases` freeze -> unfreeze "
        "schedule; the scratch one trains everything from random weights).",
        "",
        *_detection_lines(paths, results),
        *_segmentation_lines(paths, results),
        "## Hardware and time budget",
        "",
        *_runtime_lines(paths),
        "",
        "## Prediction through the exported SavedModel",
        "",
        *_prediction_lines(paths, context.predict_truth),
        "",
        "## Data",
        "",
        *[f"- {line}" for line in context.data_lines],
        "",
        "## Stages",
        "",
        *(
            [
                "Each command is what reruns the stage by hand; in this run the jobs ran inside "
                "the demo process through the same library calls (`demo.in_process`), so "
                "TensorFlow started once.",
                "",
            ]
            if context.in_process
            else []
        ),
        "| stage | status | time (s) | command |",
        "|---|---|---|---|",
    ]
    for r in results:
        cmd = "<br>".join(f"`{c}`" for c in r.commands) or "(in-process)"
        status = r.status if not r.detail else f"{r.status}: {r.detail}"
        lines.append(f"| {r.name} | {status.replace('|', '/')} | {r.seconds:.1f} | {cmd} |")
    if missing:
        lines += [
            "",
            "Stages that did not run: "
            + ", ".join(f"{r.name} ({r.status})" for r in missing)
            + ". Logs are in `logs/`.",
        ]
    lines += ["", "## Curves", ""]
    if plots:
        lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, paths.work_dir)})" for p in plots]
    else:
        lines.append("No training curves were logged (no training stage ran).")
    lines += [
        "",
        "## The same pipeline on real ImageNet and COCO",
        "",
        "```bash",
        REAL_DATA_COMMANDS.rstrip(),
        "```",
        "",
    ]
    write_text_atomic(paths.report, "\n".join(lines))
    return paths.report, plots


REAL_DATA_COMMANDS = """\
# 1. TFRecords (ILSVRC2012 train/<wnid>/ + flat val/ with synset_labels.txt; COCO 2017)
python -m pipelines.make_imagenet_tfrecords --raw_data_dir=/data/ILSVRC2012 \\
    --output_dir=/data/tfrecords/imagenet --num_workers=16
python -m pipelines.make_coco_tfrecords --image_dir=/data/coco/train2017 \\
    --object_annotations_file=/data/coco/annotations/instances_train2017.json \\
    --output_file_prefix=/data/tfrecords/coco/train --num_shards=256 --num_workers=16
python -m pipelines.make_coco_tfrecords --image_dir=/data/coco/val2017 \\
    --object_annotations_file=/data/coco/annotations/instances_val2017.json \\
    --output_file_prefix=/data/tfrecords/coco/val --num_shards=32 --num_workers=16

# 2. Pretrain ResNet-50 on ImageNet (90 epochs, batch 1024) and evaluate top-1/top-5
python -m pipelines.pretrain --config=configs/imagenet_resnet50.yaml --model_dir=runs/r50 \\
    --set=data.train_pattern='/data/tfrecords/imagenet/train-*' \\
    --set=data.eval_pattern='/data/tfrecords/imagenet/validation-*' \\
    --set=data.label_names_file=/data/tfrecords/imagenet/label_names.txt
python -m pipelines.evaluate --model_dir=runs/r50 --output=runs/r50/metrics.json

# 3. Fine-tune on COCO as 80-way multi-label (head, then everything) and evaluate mAP
python -m pipelines.finetune --config=configs/coco_multilabel_resnet50.yaml \\
    --init_checkpoint=runs/r50 --model_dir=runs/coco \\
    --set=data.train_pattern='/data/tfrecords/coco/train-*' \\
    --set=data.eval_pattern='/data/tfrecords/coco/val-*' \\
    --set=data.label_map_file=/data/tfrecords/coco/label_map.json
python -m pipelines.evaluate --model_dir=runs/coco --output=runs/coco/metrics.json

# 4. Export for TF Serving, serve, predict
python -m pipelines.export --model_dir=runs/coco --export_dir=exports/coco
docker run -p 8501:8501 -v "$PWD/exports/coco:/models/coco" -e MODEL_NAME=coco tensorflow/serving
python -m pipelines.predict --saved_model=exports/coco image.jpg
"""
