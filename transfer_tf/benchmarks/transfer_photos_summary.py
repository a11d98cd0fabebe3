"""What the real-photo transfer benchmark reports beside its runs: how far pretraining moved the
backbone's kernels (`kernel_norm_growth`), the mean and std over seeds (`summarize`) and the
BENCHMARKS.md table (`markdown_table`).

Example:
    summary = summarize([compare_on_photos(...) for seed in (0, 1, 2)])
    print(markdown_table(summary))
"""

from __future__ import annotations

import os

from transfer_tf.config import load_config


def kernel_norm_growth(pretrain_dir: str) -> dict[str, float]:
    """Per backbone stage, the median over its conv kernels of ||pretrained|| / ||random init||.

    With BatchNorm after every conv, a kernel's scale does not change the function but divides
    its effective learning rate by the scale squared: a stem grown 15x fine-tunes ~225x slower
    than a fresh one. Returns {stage: ratio} for stem, stage1..stage4.
    """
    import keras
    import numpy as np

    from transfer_tf.models.resnet import layers_by_stage
    from transfer_tf.training.run_setup import build_model
    from transfer_tf.transfer import restore

    cfg = load_config(os.path.join(pretrain_dir, "config.yaml"))
    fresh, trained = build_model(cfg), build_model(cfg)
    restore.restore_backbone(trained, pretrain_dir, flag="pretrain_dir")
    out = {}
    fresh_stages, trained_stages = layers_by_stage(fresh), layers_by_stage(trained)
    for stage in ("stem", "stage1", "stage2", "stage3", "stage4"):
        ratios = [
            float(np.linalg.norm(b.kernel.numpy()) / np.linalg.norm(a.kernel.numpy()))
            for a, b in zip(fresh_stages[stage], trained_stages[stage], strict=True)
            if isinstance(a, keras.layers.Conv2D)
        ]
        out[stage] = round(float(np.median(ratios)), 3)
    keras.backend.clear_session()
    return out


def summarize(results: list[dict]) -> dict:
    """Mean and (population) std per arm over seeds, plus pretrain top-1 and the gains."""
    import statistics

    arms = list(results[0]["runs"])
    out = {"seeds": [r["size"]["seed"] for r in results], "arms": {}}
    for arm in arms:
        values = [r["runs"][arm]["mAP"] for r in results]
        out["arms"][arm] = {
            "mAP_mean": round(statistics.fmean(values), 4),
            "mAP_std": round(statistics.pstdev(values), 4),
            "mAP": values,
        }
    top1 = [r["pretrain"]["top_1_accuracy"] for r in results]
    out["pretrain_top_1_mean"] = round(statistics.fmean(top1), 4)
    out["pretrain_top_1"] = top1
    if "shipped" in out["arms"] and "scratch" in out["arms"]:
        a = out["arms"]
        out["shipped_minus_scratch"] = round(a["shipped"]["mAP_mean"] - a["scratch"]["mAP_mean"], 4)
        if "linear_probe" in a:
            out["shipped_minus_probe"] = round(
                a["shipped"]["mAP_mean"] - a["linear_probe"]["mAP_mean"], 4
            )
    return out


def markdown_table(summary: dict) -> str:
    """The BENCHMARKS.md table of a `summarize` result."""
    rows = ["| arm | mAP mean ± std | per seed |", "|---|---|---|"]
    for arm, s in summary["arms"].items():
        per = ", ".join(f"{v:.3f}" for v in s["mAP"])
        rows.append(f"| {arm} | {s['mAP_mean']:.3f} ± {s['mAP_std']:.3f} | {per} |")
    return "\n".join(rows)
