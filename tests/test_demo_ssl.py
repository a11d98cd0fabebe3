"""Issue 17, demo: `--set=demo.pretraining=simclr|byol` plans a self-supervised pretraining stage
(labels ignored) before the same fine-tuning and scratch baseline; `make demo` stays supervised."""

import os

import pytest
import yaml

from transfer_tf.config import ConfigError, load_config
from transfer_tf.demo import plan
from transfer_tf.demo.report import _pretraining_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.yaml")


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_ssl_option_plans_a_self_supervised_pretrain_stage(tmp_path, method):
    cfg = load_config(DEMO_CONFIG, [f"demo.pretraining={method}"])
    paths = plan.DemoPaths.under(str(tmp_path))
    stages = {s.name: s for s in plan.plan_stages(cfg, paths)}
    assert method in stages["pretrain"].title and "labels ignored" in stages["pretrain"].title
    # No top-1 stage for an untrained classifier head; fine-tuning and scratch are unchanged.
    assert "evaluate_pretrain" not in stages
    assert {"finetune", "scratch", "evaluate_finetune", "evaluate_scratch"} <= set(stages)
    ((_, args),) = stages["finetune"].calls
    assert f"--init_checkpoint={paths.run_dir('pretrain')}" in args
    pre = plan.pretrain_config(cfg, paths)
    assert pre.ssl.method == method and pre.train.optimizer == "lars"
    assert pre.data.schema == "classification" and pre.data.eval_pattern  # kNN monitor
    fin = plan.finetune_config(cfg, paths)
    assert fin.ssl.method == "supervised" and fin.transfer.phases == cfg.transfer.phases
    # The report says which pretraining ran (read from the stage config the demo writes).
    os.makedirs(os.path.dirname(paths.config("pretrain")))
    with open(paths.config("pretrain"), "w") as f:
        yaml.safe_dump({"ssl": {"method": method}}, f)
    (line,) = _pretraining_lines(paths, {"eval/knn_top1": [(40, 0.625)]})
    assert f"**{method}**" in line and "0.6250" in line


def test_make_demo_stays_supervised(tmp_path):
    cfg = load_config(DEMO_CONFIG)
    assert cfg.demo.pretraining == "supervised"
    paths = plan.DemoPaths.under(str(tmp_path))
    assert "evaluate_pretrain" in {s.name for s in plan.plan_stages(cfg, paths)}
    assert plan.pretrain_config(cfg, paths).ssl.method == "supervised"
    with pytest.raises(ConfigError, match="config key 'demo.pretraining': 'moco'"):
        load_config(DEMO_CONFIG, ["demo.pretraining=moco"])
