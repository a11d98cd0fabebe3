"""The SSL benchmark's verdicts: the issue-17 targets per arm, the mean ± std over seeds of
`benchmarks.ssl.compare_ssl` results, and the BENCHMARKS.md table.

Example:
    summary = summarize([compare_ssl(work, size0), compare_ssl(work, size1)])
    summary["targets"]["simclr"]["probe_target_met"]
    print(markdown_table(summary))
"""

from __future__ import annotations

import statistics

PROBE_TARGET = 0.3  # probe top-1: SSL backbone - random init
MAP_TARGET = 0.15  # COCO-like mAP: fine-tuned from the SSL backbone - scratch
DETECTION_METRICS = ("AP", "AP50")  # judged against MAP_TARGET too: COCO's mAP and its IoU-0.5 AP


def judge_targets(
    probe_top1: dict,
    coco_map: dict,
    method: str,
    few_labels: dict | None = None,
    detection: dict | None = None,
) -> dict:
    """The issue's targets for `method`: the probe gain over random init and the mAP gain over
    scratch with every label; `few_labels` ({count: {arm: mAP}}) adds that gain per count, and
    `detection` ({arm: {"AP": ..., "AP50": ...}}) the detection AP and AP50 gains over scratch."""
    probe_gain = round(probe_top1[method] - probe_top1["random_init"], 4)
    map_gain = round(coco_map[method] - coco_map["scratch"], 4)
    out = {
        "probe_ssl_minus_random": probe_gain,
        "probe_target_met": probe_gain >= PROBE_TARGET,
        "map_ssl_minus_scratch": map_gain,
        "map_target_met": map_gain >= MAP_TARGET,
    }
    if few_labels:
        out["few_labels"] = {}
        for count, scores in few_labels.items():
            gain = round(scores[method] - scores["scratch"], 4)
            out["few_labels"][count] = {
                "map_ssl_minus_scratch": gain,
                "map_target_met": gain >= MAP_TARGET,
            }
    if detection:
        out["detection"] = {}
        for metric in DETECTION_METRICS:
            gain = round(detection[method][metric] - detection["scratch"][metric], 4)
            out["detection"][metric] = {"ssl_minus_scratch": gain, "target_met": gain >= MAP_TARGET}
    return out


def summarize(results: list[dict]) -> dict:
    """Mean and (population) std of every arm over the seeds of `compare_ssl` results, and the
    targets judged on the means (each method's per-seed gains are kept beside them)."""
    seeds = [r["seed"] for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"summarize: a seed appears twice in {seeds}")

    def stats(scores_of) -> dict:
        out = {}
        for arm in scores_of(results[0]):
            values = [scores_of(r)[arm] for r in results]
            out[arm] = {
                "mean": round(statistics.fmean(values), 4),
                "std": round(statistics.pstdev(values), 4),
                "per_seed": values,
            }
        return out

    probe, coco = stats(lambda r: r["probe_top1"]), stats(lambda r: r["coco_mAP"])
    few = {
        count: stats(lambda r, c=count: r["coco_mAP_few_labels"][c])
        for count in results[0].get("coco_mAP_few_labels", {})
    }
    means_probe = {k: v["mean"] for k, v in probe.items()}
    means_map = {k: v["mean"] for k, v in coco.items()}
    means_few = {c: {k: v["mean"] for k, v in arms.items()} for c, arms in few.items()}
    detection = {
        metric: stats(lambda r, m=metric: {a: s[m] for a, s in r["detection"].items()})
        for metric in DETECTION_METRICS
        if results[0].get("detection")
    }
    means_det = {
        arm: {metric: detection[metric][arm]["mean"] for metric in detection}
        for arm in detection.get("AP", {})
    }
    targets = {}
    for method in results[0]["targets"]:
        targets[method] = judge_targets(means_probe, means_map, method, means_few, means_det)
        for gain in ("probe_ssl_minus_random", "map_ssl_minus_scratch"):
            targets[method][f"{gain}_per_seed"] = [r["targets"][method][gain] for r in results]
        for count, judged in targets[method].get("few_labels", {}).items():
            judged["map_ssl_minus_scratch_per_seed"] = [
                r["targets"][method]["few_labels"][count]["map_ssl_minus_scratch"] for r in results
            ]
        for metric, judged in targets[method].get("detection", {}).items():
            judged["ssl_minus_scratch_per_seed"] = [
                r["targets"][method]["detection"][metric]["ssl_minus_scratch"] for r in results
            ]
    return {
        "seeds": seeds,
        "probe_top1": probe,
        "coco_mAP": coco,
        "coco_mAP_few_labels": few,
        "detection": detection,
        "targets": targets,
        "runtime": results[0].get("runtime", {}),
    }


def markdown_table(summary: dict) -> str:
    """The BENCHMARKS.md table of a `summarize` result: mean ± std (per seed) of every arm."""
    few = summary.get("coco_mAP_few_labels", {})
    columns = [*few.values(), *summary.get("detection", {}).values()]
    header = "| arm | probe top-1 | COCO-like mAP |" + "".join(
        f" mAP, {count} labelled scenes |" for count in few
    )
    header += "".join(f" detection {metric} |" for metric in summary.get("detection", {}))
    rows = [header, "|---|---|---|" + "---|" * len(columns)]
    arms = list(
        dict.fromkeys(
            [
                *summary["probe_top1"],
                *summary["coco_mAP"],
                *summary.get("detection", {}).get("AP", {}),
            ]
        )
    )

    def cell(s: dict | None) -> str:
        if s is None:
            return "-"
        per = ", ".join(f"{v:.3f}" for v in s["per_seed"])
        return f"{s['mean']:.3f} ± {s['std']:.3f} ({per})"

    for arm in arms:
        rows.append(
            f"| {arm} | {cell(summary['probe_top1'].get(arm))} | "
            f"{cell(summary['coco_mAP'].get(arm))} |"
            + "".join(f" {cell(column.get(arm))} |" for column in columns)
        )
    return "\n".join(rows)
