"""The demo's optional detection stage (`demo.detection`) plans real binaries on valid configs."""

import os

from transfer_tf.config import config_from_dict, load_config, to_dict
from transfer_tf.demo import detection, plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.yaml")


def test_detection_stages_only_when_asked(tmp_path):
    paths = plan.DemoPaths.under(str(tmp_path))
    names = [s.name for s in detection.demo_stages(load_config(DEMO_CONFIG), paths)]
    assert "detect_finetune" not in names and "predict" in names
    cfg = load_config(DEMO_CONFIG, ["demo.detection=true"])
    stages = {s.name: s for s in detection.demo_stages(cfg, paths)}
    order = list(stages)
    assert (
        order.index("pretrain") < order.index("detect_finetune") < order.index("export_detection")
    )
    assert stages["detect_finetune"].needs == ("build_coco", "pretrain")
    ((module, args),) = stages["predict_detection"].calls
    assert module == "pipelines.predict" and f"--draw_dir={paths.plots}" in args
    ((module, args),) = stages["evaluate_detect_scratch"].calls
    assert f"--eval_pattern={plan.coco_eval_pattern(paths)}" in args

    # Both experiments are valid detection configs with the same step budget.
    configs = detection.detection_configs(cfg, paths)
    steps = {}
    for run, run_cfg in configs.items():
        checked = config_from_dict(to_dict(run_cfg))  # what the finetune binary will load
        assert checked.transfer.task == "detection" and checked.data.schema == "coco"
        steps[run] = sum(p.steps for p in checked.transfer.phases)
    assert steps["detect_finetune"] == steps["detect_scratch"] == detection.STEPS
    assert configs["detect_finetune"].transfer.phases[0].trainable == "fpn,head"
