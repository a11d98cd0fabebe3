"""The demo report's plots: training curves from TensorBoard event files, phases shaded.

Example:
    curves = read_scalars("demo_out/runs/pretrain")  # {"train/loss": [(step, value), ...], ...}
    plot_run(curves, "Pretrain", "demo_out/plots/pretrain.png")
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence

Curves = dict[str, list[tuple[int, float]]]

# Metrics shown in the table, in order, with how to print them (key in the evaluate JSON).
TABLE_METRICS = (
    ("top_1_accuracy", "top-1"),
    ("top_5_accuracy", "top-5"),
    ("knn_top1", "kNN top-1"),
    ("mAP", "mAP"),
    ("macro_F1", "macro F1"),
    ("micro_F1", "micro F1"),
    ("loss", "eval loss"),
)


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
