"""Issue 17, demo: `--set=demo.pretraining=simclr|byol` plans a self-supervised pretraining stage
(labels ignored) before the same fine-tuning and scratch baseline; `make demo` stays supervised."""

import json
import os

import pytest
import yaml

from transfer_tf.config import ConfigError, load_config
from transfer_tf.demo import plan
from transfer_tf.demo.report import _metrics_table, _pretraining_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.yaml")


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_ssl_option_plans_a_self_supervised_pretrain_stage(tmp_path, method):
    cfg = load_config(DEMO_CONFIG, [f"demo.pretraining={method}"])
    paths = plan.DemoPaths.under(str(tmp_path))
    stages = {s.name: s for s in plan.plan_stages(cfg, paths)}
    assert method in stages["pretrain"].title and "labels ignored" in stages["pretrain"].title
    # Its evaluate stage is the kNN eval (the binary dispatches on ssl.method); fine-tuning and
    # scratch are unchanged.
    ((module, eval_args),) = stages["evaluate_pretrain"].calls
    assert module == "pipelines.evaluate" and f"--output={paths.metrics('pretrain')}" in eval_args
    assert {"finetune", "scratch", "evaluate_finetune", "evaluate_scratch"} <= set(stages)
    ((_, args),) = stages["finetune"].calls
    assert f"--init_checkpoint={paths.run_dir('pretrain')}" in args
    pre = plan.pretrain_config(cfg, paths)
    assert pre.ssl.method == method and pre.train.optimizer == "lars"
    assert pre.data.schema == "classification" and pre.data.eval_pattern  # kNN eval split
    assert pre.train.eval_every_epochs == 0  # the evaluate stage runs kNN once, not the loop too
    fin = plan.finetune_config(cfg, paths)
    assert fin.ssl.method == "supervised" and fin.transfer.phases == cfg.transfer.phases
    # The report says which pretraining ran (read from the stage config the demo writes).
    os.makedirs(os.path.dirname(paths.config("pretrain")))
    with open(paths.config("pretrain"), "w") as f:
        yaml.safe_dump({"ssl": {"method": method}}, f)
    (line,) = _pretraining_lines(paths)
    assert f"**{method}**" in line and "kNN eval was not run" in line
    os.makedirs(os.path.dirname(paths.metrics("pretrain")), exist_ok=True)
    with open(paths.metrics("pretrain"), "w") as f:
        json.dump({"knn_top1": 0.625, "knn_k": 20}, f)
    (line,) = _pretraining_lines(paths)
    assert f"**{method}**" in line and "0.6250" in line and "k=20" in line
    table, _ = _metrics_table(paths)
    assert "kNN top-1" in table[0] and "0.6250" in table[2]


def test_make_demo_stays_supervised(tmp_path):
    cfg = load_config(DEMO_CONFIG)
    assert cfg.demo.pretraining == "supervised"
    paths = plan.DemoPaths.under(str(tmp_path))
    assert "evaluate_pretrain" in {s.name for s in plan.plan_stages(cfg, paths)}
    assert plan.pretrain_config(cfg, paths).ssl.method == "supervised"
    with pytest.raises(ConfigError, match="config key 'demo.pretraining': 'moco'"):
        load_config(DEMO_CONFIG, ["demo.pretraining=moco"])
