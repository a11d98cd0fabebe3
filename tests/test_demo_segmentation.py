"""The demo's optional segmentation stage (`demo.segmentation`) plans real binaries on valid
configs, and turns on the instance masks of the COCO-like shards only when asked."""

import os

from transfer_tf.config import config_from_dict, load_config, to_dict
from transfer_tf.demo import detection, plan, segmentation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.yaml")


def _stages(cfg, paths):
    return segmentation.with_segmentation(cfg, paths, detection.demo_stages(cfg, paths))


def _builds_masks(stages):
    (build,) = [s for s in stages if s.name == "build_coco"]
    return ["--include_masks" in args for _, args in build.calls]


def test_segmentation_stages_only_when_asked(tmp_path):
    paths = plan.DemoPaths.under(str(tmp_path))
    plain = _stages(load_config(DEMO_CONFIG), paths)
    assert "segment_finetune" not in [s.name for s in plain]
    assert _builds_masks(plain) == [False, False]

    cfg = load_config(DEMO_CONFIG, ["demo.segmentation=true"])
    stages = {s.name: s for s in _stages(cfg, paths)}
    assert _builds_masks(stages.values()) == [True, True]  # train and val shards
    order = list(stages)
    assert order.index("pretrain") < order.index("segment_finetune")
    assert order.index("segment_finetune") < order.index("export_segmentation")
    assert stages["segment_finetune"].needs == ("build_coco", "pretrain")
    ((module, args),) = stages["predict_segmentation"].calls
    assert module == "pipelines.predict" and f"--draw_dir={segmentation.overlay_dir(paths)}" in args
    ((module, args),) = stages["evaluate_segment_scratch"].calls
    assert f"--eval_pattern={plan.coco_eval_pattern(paths)}" in args

    # Both experiments are valid segmentation configs with the same step budget.
    configs = segmentation.segmentation_configs(cfg, paths)
    steps = {}
    for run, run_cfg in configs.items():
        checked = config_from_dict(to_dict(run_cfg))  # what the finetune binary will load
        assert checked.transfer.task == "segmentation" and checked.data.schema == "coco"
        assert checked.segmentation.max_eval_size >= max(cfg.demo.coco_image_size)
        steps[run] = sum(p.steps for p in checked.transfer.phases)
    assert steps["segment_finetune"] == steps["segment_scratch"] == segmentation.STEPS
    assert configs["segment_finetune"].transfer.phases[0].trainable == "fpn,head"
