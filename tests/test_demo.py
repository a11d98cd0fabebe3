"""The demo: stage configs, report reading, and a reduced end-to-end run of `pipelines.demo`."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from transfer_tf.config import load_config
from transfer_tf.demo import plan
from transfer_tf.demo.plots import find_metric, plot_run, read_scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.yaml")

# A reduced demo: every stage runs, on tiny data and a small model.
TINY = [
    "--set=model.name=resnet10",
    "--set=data.image_size=32",
    "--set=data.num_classes=4",
    "--set=data.shuffle_buffer=64",
    "--set=train.global_batch_size=8",
    "--set=train.epochs=2",
    "--set=train.log_every_steps=2",
    "--set=demo.train_per_class=8",
    "--set=demo.val_per_class=2",
    "--set=demo.raw_image_size=[32,48]",
    "--set=demo.coco_train_images=16",
    "--set=demo.coco_val_images=8",
    "--set=demo.coco_category_ids=[2,5,9]",
    "--set=demo.coco_image_size=[40,56]",
    "--set=demo.train_shards=2",
    "--set=demo.validation_shards=1",
    "--set=demo.num_workers=1",
    "--set=transfer.phases.0.epochs=1",
    "--set=transfer.phases.1.epochs=1",
    # demo.yaml's XLA probe times 4 candidates; explicit here, the size stage times just this one.
    "--set=train.xla=false",
]


def run_demo(work_dir, *args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.demo", f"--work_dir={work_dir}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_stage_configs_point_at_the_demo_data(tmp_path):
    cfg = load_config(DEMO_CONFIG)
    paths = plan.DemoPaths.under(str(tmp_path))
    pre = plan.pretrain_config(cfg, paths)
    fin = plan.finetune_config(cfg, paths)
    assert pre.data.schema == "classification" and fin.data.schema == "coco"
    assert pre.data.train_pattern.startswith(paths.imagenet_tfrecords)
    assert pre.data.num_train_examples == cfg.data.num_classes * cfg.demo.train_per_class
    assert fin.data.num_classes == len(cfg.demo.coco_category_ids)
    assert fin.data.label_map_file == os.path.join(paths.coco_tfrecords, "label_map.json")
    assert fin.transfer.phases == cfg.transfer.phases
    # The demo config itself is not modified by deriving stage configs.
    assert cfg.data.schema == "classification" and cfg.data.train_pattern == ""


def test_scratch_gets_the_same_step_budget(tmp_path):
    pytest.importorskip("transfer_tf.transfer.schedule")
    cfg = load_config(DEMO_CONFIG)
    fin = plan.finetune_config(cfg, plan.DemoPaths.under(str(tmp_path)))
    scratch = plan.scratch_config(fin)
    total = sum(plan.phase_steps(fin, p) for p in fin.transfer.phases)
    assert [p.trainable for p in scratch.transfer.phases] == ["all"]
    assert scratch.transfer.phases[0].steps == total > 0
    assert scratch.transfer.phases[0].base_learning_rate == max(
        p.base_learning_rate for p in fin.transfer.phases
    )


def test_stage_commands_are_the_real_binaries(tmp_path):
    cfg = load_config(DEMO_CONFIG)
    stages = plan.plan_stages(cfg, plan.DemoPaths.under(str(tmp_path)))
    names = [s.name for s in stages]
    assert names.index("build_imagenet") < names.index("pretrain") < names.index("finetune")
    assert names.index("finetune") < names.index("export") < names.index("predict")
    # Every call is one of the project's binaries (a console script in setup.py).
    setup = open(os.path.join(REPO, "setup.py")).read()
    jobs = set(re.findall(r'^    "(\w+)",$', setup, flags=re.M))
    assert {"pretrain", "finetune", "evaluate", "export", "predict"} <= jobs
    for stage in stages[1:]:
        for module, args in stage.calls:
            assert module.startswith("pipelines.") and module.split(".")[1] in jobs
            assert all(a.startswith("--") or a.endswith(".jpg") for a in args)
    coco = next(s for s in stages if s.name == "build_coco")
    assert len(coco.calls) == 2  # train and val
    # Fine-tuning runs carry no eval set (no duplicate final eval); their evaluate stage names it.
    paths = plan.DemoPaths.under(str(tmp_path))
    assert plan.finetune_config(cfg, paths).data.eval_pattern == ""
    for run in ("finetune", "scratch"):
        ((module, args),) = next(s for s in stages if s.name == f"evaluate_{run}").calls
        assert f"--eval_pattern={plan.coco_eval_pattern(paths)}" in args


def test_read_scalars_and_plot(tmp_path):
    import tensorflow as tf

    for sub, values in (("train", [3.0, 2.0, 1.5]), ("eval", [0.2, 0.6])):
        writer = tf.summary.create_file_writer(str(tmp_path / "summaries" / sub))
        with writer.as_default():
            for step, v in enumerate(values):
                # The raw summary op: what tf.summary.scalar writes, minus the TensorBoard
                # plugin metadata (so the test does not need the tensorboard package).
                tag = "loss" if sub == "train" else "mAP"
                tf.summary.write(tag, tf.constant(v), step=step * 10)
        writer.close()
    curves = read_scalars(str(tmp_path))
    assert [v for _, v in curves["train/loss"]] == pytest.approx([3.0, 2.0, 1.5])
    assert [s for s, _ in curves["eval/mAP"]] == [0, 10]
    png = plot_run(curves, "t", str(tmp_path / "p.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_find_metric_nested():
    assert find_metric({"metrics": {"mAP": 0.5}}, "mAP") == 0.5
    assert find_metric({"mAP": 0.25, "x": {"mAP": 0.9}}, "mAP") == 0.25
    assert find_metric({"top_1_accuracy": True}, "top_1_accuracy") is None
    assert find_metric(None, "mAP") is None


def test_refuses_a_non_demo_work_dir(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = run_demo(tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: --work_dir") and "Traceback" not in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def _table_rows(report):
    """The results table's rows: {source file: metric cells}."""
    section = report.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and re.fullmatch(r"`metrics/\w+\.json`", cells[-1]):
            rows[cells[-1].strip("`")] = cells[1:-1]
    return rows


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    work = tmp_path / "demo"
    proc = run_demo(work, *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "[1/" in out and "report:" in out  # progress and the closing summary

    summary = json.loads((work / "summary.json").read_text())
    assert summary["ok"] and all(s["status"] == "ok" for s in summary["stages"])
    assert len(glob.glob(str(work / "tfrecords" / "imagenet" / "train-*"))) == 2
    assert len(glob.glob(str(work / "tfrecords" / "coco" / "val-*"))) == 1
    for run in ("pretrain", "finetune", "scratch"):
        assert (work / "runs" / run / "config.yaml").exists()
        assert (work / "plots" / f"{run}.png").exists()
    assert (work / "plots" / "transfer_comparison.png").exists()
    assert glob.glob(str(work / "export" / "*" / "saved_model.pb"))

    # Every number in the metrics table is the one its stage wrote.
    report = (work / "report.md").read_text()
    sizing = json.loads((work / "sizing.json").read_text())
    assert sizing["step_seconds"] > 0 and sizing["runtime"]["xla"] is False
    assert f"sized to {sizing['epochs']:g} of the configured 2 epochs" in report
    pre = json.loads((work / "runs" / "pretrain" / "runtime.json").read_text())
    assert pre["mixed_precision"] == sizing["runtime"]["mixed_precision"]
    rows = _table_rows(report)
    assert set(rows) == {f"metrics/{r}.json" for r in ("pretrain", "finetune", "scratch")}
    header = next(line for line in report.splitlines() if line.startswith("| run |"))
    labels = [c.strip() for c in header.strip("|").split("|")][1:-1]
    keys = {"top-1": "top_1_accuracy", "mAP": "mAP", "macro F1": "macro_F1"}
    checked = 0
    for source, cells in rows.items():
        doc = json.loads((work / source).read_text())
        for label, cell in zip(labels, cells, strict=True):
            if label in keys and cell != "–":
                assert cell == f"{find_metric(doc, keys[label]):.4f}", (source, label)
                checked += 1
    assert checked >= 3

    # The prediction shown is the one predict.py wrote, for the image the demo generated.
    pred = json.loads((work / "metrics" / "predict.json").read_text())["predictions"][0]
    assert os.path.basename(pred["image"]) == os.path.basename(
        plan.predict_image(plan.DemoPaths.under(str(work)))
    )
    top = pred["top_k"][0]
    top_name = top["class"] if isinstance(top, dict) else top[1]
    assert re.search(rf"\| 1 \| {re.escape(top_name)} \|", report)


def test_console_line_trims_absl_prefix_and_drops_startup_noise():
    from transfer_tf.demo.stages import console_line

    absl = "I1129 00:48:14.712522 140151437175680 sharded_writer.py:329] imagenet: 180 images"
    assert console_line(absl) == "imagenet: 180 images"
    assert console_line(absl.replace("I1129", "W1129")) == "warning: imagenet: 180 images"
    noise = "I0000 00:00:1795913275.834643   10337 cudart_stub.cc:31] Could not find cuda drivers"
    assert console_line(noise) is None
    assert console_line("plain progress") == "plain progress"
    assert len(console_line("x" * 1000)) < 300


def test_in_process_stage_failure_is_one_line_and_logged(tmp_path):
    from transfer_tf.demo.inprocess import supports
    from transfer_tf.demo.stages import run_stage

    assert supports("pipelines.evaluate") and not supports("pipelines.inspect_tfrecords")
    missing = tmp_path / "no_such_run"
    stage = plan.Stage(
        "evaluate_x",
        "Evaluate",
        [("pipelines.evaluate", [f"--model_dir={missing}", f"--output={tmp_path / 'm.json'}"])],
    )
    shown = []
    log = tmp_path / "logs" / "evaluate_x.log"
    result = run_stage(stage, str(log), echo=shown.append, in_process=True)
    assert result.status == "failed" and str(missing) in result.detail
    assert "\n" not in result.detail and not (tmp_path / "m.json").exists()
    # The traceback is in the stage log for debugging; the console gets the one line.
    assert "Traceback" in log.read_text() and not any("Traceback" in s for s in shown)


def test_time_budget_sizes_pretraining_epochs():
    from transfer_tf.demo import budget

    sizes = dict(
        budget_s=330.0, elapsed_s=40.0, compile_s=10.0, steps_per_epoch=18,
        configured_epochs=8.0, head_steps=15, full_steps=15, scratch_steps=30,
    )  # fmt: skip
    # A fast machine keeps the configured epochs.
    epochs, total = budget.fit_epochs(step_s=0.4, **sizes)
    assert epochs == 8.0 and total < 330
    # A 3x slower step: fewer pretraining epochs, in halves, and the prediction fits the budget.
    epochs, total = budget.fit_epochs(step_s=1.2, **sizes)
    assert 2.0 <= epochs < 8.0 and epochs * 2 == int(epochs * 2) and total <= 330
    assert budget.fit_epochs(step_s=1.2, **{**sizes, "compile_s": 30.0})[0] < epochs
    # Too slow for even the minimum: the minimum, and the prediction says it is over budget.
    epochs, total = budget.fit_epochs(step_s=4.0, **sizes)
    assert epochs == budget.MIN_EPOCHS and total > 330
