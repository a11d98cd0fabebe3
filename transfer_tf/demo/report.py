"""The demo's report: metrics from the stages' own JSON files, curves from their TensorBoard logs.

Nothing in the report is computed here: every number is read from a file a stage wrote
(`metrics/<run>.json` from pipelines/evaluate.py, `metrics/predict.json` from pipelines/predict.py,
TensorBoard event files under each run's model dir), so the report cannot disagree with the run.

Example:
    curves = read_scalars("demo_out/runs/pretrain")  # {"train/loss": [(step, value), ...], ...}
    write_report(paths, results, context)            # demo_out/report.md + demo_out/plots/*.png
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from transfer_tf.atomic_io import write_text_atomic
from transfer_tf.demo.plan import REAL_DATA_COMMANDS, DemoPaths
from transfer_tf.demo.stages import StageResult

Curves = dict[str, list[tuple[int, float]]]

# Metrics shown in the table, in order, with how to print them (key in the evaluate JSON).
TABLE_METRICS = (
    ("top_1_accuracy", "top-1"),
    ("top_5_accuracy", "top-5"),
    ("mAP", "mAP"),
    ("macro_F1", "macro F1"),
    ("micro_F1", "micro F1"),
    ("loss", "eval loss"),
)
RUN_TITLES = {
    "pretrain": "Pretrain (ImageNet-like, single-label)",
    "finetune": "Fine-tune from pretrained (COCO-like, multi-label)",
    "scratch": "From scratch, same budget (COCO-like, multi-label)",
}


def read_scalars(model_dir: str) -> Curves:
    """Every scalar summary under `model_dir`, keyed `<subdir>/<tag>` (e.g. `train/loss`).

    Reads TF2 (`tf.summary.scalar`, tensor-valued) and TF1 (`simple_value`) events; values are
    sorted by step, and a step logged twice (a resumed run) keeps the last value.
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    curves: dict[str, dict[int, float]] = {}
    pattern = os.path.join(model_dir, "**", "events.out.tfevents.*")
    for path in sorted(glob.glob(pattern, recursive=True)):
        sub = os.path.relpath(os.path.dirname(path), model_dir).replace(os.sep, "/")
        sub = sub.removeprefix("summaries").strip("/") or "train"
        try:
            for record in tf.data.TFRecordDataset(path, buffer_size=1 << 18):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = float(value.simple_value)
                    elif value.HasField("tensor"):
                        array = tf.make_ndarray(value.tensor)
                        if array.size != 1 or array.dtype.kind not in "fiu":
                            continue
                        number = float(array.reshape(()))
                    else:
                        continue
                    curves.setdefault(f"{sub}/{value.tag}", {})[int(event.step)] = number
        except tf.errors.DataLossError:
            # A file still being written (or cut by a kill) ends in a partial record.
            continue
    return {tag: sorted(points.items()) for tag, points in curves.items()}


def read_json(path: str) -> dict | None:
    """The JSON document at `path`, or None if missing or unreadable."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def find_metric(doc: dict | None, key: str) -> float | None:
    """`doc[key]`, or the same key in a nested mapping (e.g. `doc["metrics"][key]`)."""
    if not doc:
        return None
    value = doc.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    for sub in doc.values():
        if isinstance(sub, dict):
            found = find_metric(sub, key)
            if found is not None:
                return found
    return None


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


def read_phases(model_dir: str) -> list[tuple[str, int, int]]:
    """`(name, start_step, end_step)` of a fine-tuning run's phases (its `schedule.json`)."""
    doc = None
    try:
        with open(os.path.join(model_dir, "schedule.json")) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError):
        return []
    if not isinstance(doc, list):
        return []
    return [
        (str(p.get("name", i)), int(p["start_step"]), int(p["end_step"]))
        for i, p in enumerate(doc)
        if isinstance(p, dict) and "start_step" in p and "end_step" in p
    ]


def _mark_phases(ax, phases: Sequence[tuple[str, int, int]]) -> None:
    """Shades alternate phases and names them at the top of the panel (x axis spans them all)."""
    if phases:
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, phases[0][1]), max(hi, phases[-1][2]))
    for i, (name, start, end) in enumerate(phases):
        if i % 2 == 0:
            ax.axvspan(start, end, color="0.92", zorder=0)
        ax.text(
            (start + end) / 2, 1.0, name, transform=ax.get_xaxis_transform(),
            ha="center", va="bottom", fontsize=7, color="0.35",
        )  # fmt: skip


def plot_run(
    curves: Curves,
    title: str,
    out_path: str,
    phases: Sequence[tuple[str, int, int]] = (),
) -> str | None:
    """One PNG per run: a panel per curve family (loss, learning rate, accuracy/mAP, ...), with
    the fine-tuning phases (`read_phases`) shaded and named.

    Returns `out_path`, or None when the run logged nothing to plot.
    """
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[str]] = {}
    for tag in sorted(curves):
        name = tag.split("/", 1)[-1]
        low = name.lower()
        if "loss" in low:
            family = "loss"
        elif "learning_rate" in low or low in ("lr",):
            family = "learning rate"
        elif any(k in low for k in ("accuracy", "map", "f1", "ap", "top")):
            family = "metric"
        else:
            continue  # throughput/timing curves are noise in a quality plot
        groups.setdefault(family, []).append(tag)
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for ax, (family, tags) in zip(axes[0], sorted(groups.items()), strict=True):
        for tag in tags:
            steps, values = zip(*curves[tag], strict=True)
            marker = "o" if len(steps) < 30 else None
            ax.plot(steps, values, label=tag, marker=marker, markersize=3)
        _mark_phases(ax, phases)
        ax.set_title(family, pad=12 if phases else None)
        ax.set_xlabel("global step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def plot_comparison(
    curves: dict[str, Curves],
    finals: dict[str, dict | None],
    title: str,
    out_path: str,
    phases: Sequence[tuple[str, int, int]] = (),
) -> str | None:
    """Pretrained vs scratch in one PNG: training loss per step (fine-tuning phases shaded) and
    the final evaluation metrics (from the evaluate JSONs) side by side."""
    loss = {run: c["train/loss"] for run, c in curves.items() if c.get("train/loss")}
    bars = [
        (label, {run: find_metric(doc, key) for run, doc in finals.items()})
        for key, label in TABLE_METRICS
        if key in ("mAP", "macro_F1", "micro_F1")
    ]
    bars = [(label, vals) for label, vals in bars if any(v is not None for v in vals.values())]
    if not loss and not bars:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = int(bool(loss)) + int(bool(bars))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    if loss:
        ax = axes.pop(0)
        for run, points in loss.items():
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=run, marker="o" if len(steps) < 30 else None, markersize=3)
        _mark_phases(ax, phases)
        ax.set_title("training loss", pad=12 if phases else None)
        ax.set_xlabel("global step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if bars:
        ax = axes.pop(0)
        runs = list(finals)
        width = 0.8 / len(runs)
        for j, run in enumerate(runs):
            xs = [i + j * width for i in range(len(bars))]
            ys = [vals.get(run) or 0.0 for _, vals in bars]
            ax.bar(xs, ys, width=width, label=run)
            for x, y in zip(xs, ys, strict=True):
                ax.text(x, y, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(bars))])
        ax.set_xticklabels([label for label, _ in bars])
        ax.set_ylim(0, 1.05)
        ax.set_title("final evaluation (COCO-like val)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


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
        "## Results",
        "",
        *table,
        "",
        "Pretrain is single-label top-1/top-5 on the ImageNet-like validation split; the two "
        "COCO-like rows are multi-label mAP on the COCO-like val split at the same number of "
        "training steps (the fine-tuned one follows the `transfer.phases` freeze -> unfreeze "
        "schedule; the scratch one trains everything from random weights).",
        "",
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
