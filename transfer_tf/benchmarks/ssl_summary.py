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


def judge_targets(
    probe_top1: dict, coco_map: dict, method: str, few_labels: dict | None = None
) -> dict:
    """The issue's targets for `method`: the probe gain over random init and the mAP gain over
    scratch with every label; `few_labels` ({count: {arm: mAP}}) adds that gain per count."""
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
    targets = {}
    for method in results[0]["targets"]:
        targets[method] = judge_targets(means_probe, means_map, method, means_few)
        for gain in ("probe_ssl_minus_random", "map_ssl_minus_scratch"):
            targets[method][f"{gain}_per_seed"] = [r["targets"][method][gain] for r in results]
        for count, judged in targets[method].get("few_labels", {}).items():
            judged["map_ssl_minus_scratch_per_seed"] = [
                r["targets"][method]["few_labels"][count]["map_ssl_minus_scratch"] for r in results
            ]
    return {
        "seeds": seeds,
        "probe_top1": probe,
        "coco_mAP": coco,
        "coco_mAP_few_labels": few,
        "targets": targets,
        "runtime": results[0].get("runtime", {}),
    }


def markdown_table(summary: dict) -> str:
    """The BENCHMARKS.md table of a `summarize` result: mean ± std (per seed) of every arm."""
    few = summary.get("coco_mAP_few_labels", {})
    header = "| arm | probe top-1 | COCO-like mAP |" + "".join(
        f" mAP, {count} labelled scenes |" for count in few
    )
    rows = [header, "|---|---|---|" + "---|" * len(few)]
    arms = list(dict.fromkeys([*summary["probe_top1"], *summary["coco_mAP"]]))

    def cell(s: dict | None) -> str:
        if s is None:
            return "-"
        per = ", ".join(f"{v:.3f}" for v in s["per_seed"])
        return f"{s['mean']:.3f} ± {s['std']:.3f} ({per})"

    for arm in arms:
        rows.append(
            f"| {arm} | {cell(summary['probe_top1'].get(arm))} | "
            f"{cell(summary['coco_mAP'].get(arm))} |"
            + "".join(f" {cell(arms_few.get(arm))} |" for arms_few in few.values())
        )
    return "\n".join(rows)
