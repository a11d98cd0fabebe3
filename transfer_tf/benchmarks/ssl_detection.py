"""COCO detection transfer of the SSL benchmark's backbones: RetinaNet from each pretraining and
from scratch, at an equal step budget (`benchmarks.ssl` with `detection_steps`, sized by
`SSLBenchmarkSize.detection_size()`).

Detection is the evaluation self-supervised papers lead with for transfer (MoCo, BYOL, SimCLR
fine-tune on COCO detection), and where this project's supervised backbone showed its largest
gain (`benchmarks.detection`, BENCHMARKS.md). Each backbone of `benchmarks.ssl` (every SSL arm and
the supervised one, pretrained at the SSL benchmark's image size) and a random init train the
detection benchmark's RetinaNet on its COCO-like scenes (exact boxes, the pretraining's
vocabulary, 128 px input) with its recipe: pretrained `fpn,head` for a quarter of the budget, then
`all`; scratch `all` with warmup. Scored with COCOeval on the val split: AP (COCO's mAP,
IoU 0.50:0.95) and AP50.

Example:
    scores = detection_arms(work_dir, size.detection_size(),
                            {"simclr": "runs/pretrain_simclr", "scratch": ""}, timed)
    scores["simclr"]["AP"] - scores["scratch"]["AP"]
"""

from __future__ import annotations

import os
from collections.abc import Callable

from absl import logging

from transfer_tf.benchmarks import detection, downstream

METRICS = ("AP", "AP50", "AP75")


def detection_arms(
    work_dir: str,
    dsize: detection.DetectionBenchmarkSize,
    backbones: dict[str, str],
    timed: Callable,
) -> dict[str, dict[str, float]]:
    """Trains a RetinaNet from each of `backbones` ({arm: pretraining run dir, "" for scratch})
    for `dsize.budgets[0]` steps on `dsize`'s scenes, generated under `work_dir/detection`.

    `timed(name, run, cfg, run_dir, **kwargs)` runs each (`compare_ssl`'s timer). Returns
    {arm: {"AP": float, "AP50": float, "AP75": float}} (COCOeval on the val split)."""
    from transfer_tf.transfer.finetune import run_finetuning

    coco_dir = downstream.prepare_scenes(os.path.join(work_dir, "detection"), dsize)
    scores = {}
    for name, source in backbones.items():
        cfg = detection.detection_config(
            dsize, coco_dir, "pretrained" if source else "scratch", dsize.budgets[0]
        )
        result = timed(
            f"detection_{name}",
            run_finetuning,
            cfg,
            os.path.join(work_dir, "runs", f"detection_{name}"),
            init_checkpoint=source,
        )
        scores[name] = {k: round(result["eval"][k], 4) for k in METRICS}
        logging.info("detection from %s: %s", name, scores[name])
    return scores
