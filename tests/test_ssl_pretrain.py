"""Issue 17 end to end on a tiny ResNet-18 (16 px): SimCLR and BYOL pretraining through the same
job and Trainer (metrics, kNN monitor), BYOL's target following the EMA inside the loop, a killed
BYOL run resuming exactly, and fine-tuning from an SSL run dropping exactly its heads."""

import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import load_config
from transfer_tf.data.schemas import classification_example
from transfer_tf.demo.plots import read_scalars
from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import backbone_layers, build_classifier
from transfer_tf.ssl.methods import make_objective
from transfer_tf.ssl.momentum import cosine_momentum
from transfer_tf.ssl.settings import CHECKPOINT_OBJECTS
from transfer_tf.training import checkpoints, schedules
from transfer_tf.training.loop import Trainer
from transfer_tf.training.optimizers import SGD
from transfer_tf.training.pretrain import run_pretraining
from transfer_tf.training.strategy import make_strategy
from transfer_tf.transfer.finetune import run_finetuning
from transfer_tf.transfer.restore import restore_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 4
STEPS = 16


def _write_shards(prefix: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(f"{prefix}-00000-of-00001") as w:
        for i in range(n):
            label = i % CLASSES
            img = rng.integers(0, 60, [40, 40, 3]).astype("uint8")
            img[..., label % 3] += np.uint8(60 + 40 * label)
            jpeg = tf.io.encode_jpeg(img, quality=95).numpy()
            w.write(
                classification_example(
                    jpeg, label + 1, f"c{label}", 40, 40, "x"
                ).SerializeToString()
            )


def _config_text(data_dir, method: str) -> str:
    return f"""
name: tiny_{method}
seed: 3
deterministic: true
data:
  train_pattern: {data_dir}/train-*
  eval_pattern: {data_dir}/validation-*
  num_classes: {CLASSES}
  num_train_examples: 64
  num_eval_examples: 16
  image_size: 16
  shuffle_buffer: 64
  cycle_length: 1
model:
  name: resnet10
train:
  global_batch_size: 8
  train_steps: {8 if method == "simclr" else STEPS}
  optimizer: lars
  base_learning_rate: 0.3
  weight_decay: 1.0e-6
  warmup_epochs: 0.5
  strategy: one_device
  checkpoint_every_steps: 4
  log_every_steps: 4
  eval_every_epochs: {1 if method == "simclr" else 0}
  checkpoint_input: true
ssl:
  method: {method}
  projection_widths: [64, 32]
  knn_k: 5
  knn_train_examples: 32
""" + (BYOL_KEYS if method == "byol" else "")


# Keys only BYOL reads (under simclr they are an error: accepted and never read).
BYOL_KEYS = """  predictor_widths: [64, 32]
  momentum_base: 0.99
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Config files and in-process run dirs: SimCLR (8 steps, kNN monitor at step 8) and BYOL
    (16 steps, no periodic eval: the uninterrupted reference of the resume test)."""
    d = tmp_path_factory.mktemp("ssl_runs")
    _write_shards(str(d / "train"), 64, seed=0)
    _write_shards(str(d / "validation"), 16, seed=1)
    out = {}
    for method in ("simclr", "byol"):
        path = d / f"{method}.yaml"
        path.write_text(_config_text(d, method))
        cfg = load_config(str(path))
        run_dir = str(d / f"run_{method}")
        logs = run_pretraining(cfg, run_dir)
        out[method] = (str(path), run_dir, logs)
    return out


@pytest.mark.slow
def test_simclr_and_byol_pretrain_with_label_free_metrics(runs):
    for method, names in (
        ("simclr", ("embedding_std", "contrastive_accuracy")),
        ("byol", ("embedding_std", "target_momentum")),
    ):
        _, run_dir, logs = runs[method]
        assert np.isfinite(logs["loss"]) and all(name in logs for name in names), logs
        assert logs["embedding_std"] > 0.0
        curves = read_scalars(run_dir)
        assert all(np.isfinite(v) for _, v in curves["train/loss"])
        assert all(f"train/{name}" in curves for name in names)
        top = {
            n.split("/")[0]
            for n, _ in tf.train.list_variables(checkpoints.resolve_checkpoint(run_dir))
        }
        assert set(CHECKPOINT_OBJECTS[method]) <= top and "model" in top
    # kNN top-1 of the eval split at the end of the epoch (8 steps): the label-free run's eval.
    knn = read_scalars(runs["simclr"][1])["eval/knn_top1"]
    assert [step for step, _ in knn] == [8] and 0.0 <= knn[0][1] <= 1.0
    assert 0.0 <= runs["simclr"][2]["contrastive_accuracy"] <= 1.0
    assert 0.99 < runs["byol"][2]["target_momentum"] <= 1.0


def test_byol_target_follows_the_ema_and_never_trains(tmp_path):
    cfg = load_config(
        None,
        ["ssl.method=byol", "model.name=resnet10", "data.image_size=16", "data.num_classes=3",
         "ssl.projection_widths=[32, 16]", "ssl.predictor_widths=[32, 16]"],
    )  # fmt: skip
    strategy = make_strategy("one_device")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_classifier(cfg.model, 3)
        objective = make_objective(cfg, model, total_steps=10)
        optimizer = SGD(0.1, momentum=0.9)
    trainer = Trainer(
        model, optimizer, strategy, str(tmp_path), global_batch_size=8,
        extra_checkpoint_objects=objective.checkpoint_objects,
        extra_variables=objective.head_variables,
    )  # fmt: skip
    objective.start(strategy)
    online_before = [o.numpy() for o, _ in objective.updater.pairs]
    assert all(np.array_equal(o.numpy(), t.numpy()) for o, t in objective.updater.pairs)
    trained = {id(v) for v in objective.trainable_variables}
    assert not {id(t) for _, t in objective.updater.pairs} & trained
    assert id(model.get_layer("head_dense").kernel) not in trained
    rng = np.random.default_rng(0)
    views = tuple(rng.integers(0, 255, [8, 16, 16, 3]).astype("uint8") for _ in range(2))

    def data(ctx):
        return tf.data.Dataset.from_tensors((views, tf.zeros([8, 0]))).repeat()

    logs = trainer.train(
        data, end_step=1, lr_schedule=schedules.warmup_constant(0.1), objective=objective,
        trainable_variables=objective.trainable_variables,
    )  # fmt: skip
    assert np.isfinite(logs["loss"]) and logs["embedding_std"] > 0
    tau = float(cosine_momentum(0, 10, 0.996))
    assert logs["target_momentum"] == 0.0  # reported by the step, before its first update
    moved = 0
    for (online, target), before in zip(objective.updater.pairs, online_before, strict=True):
        want = tau * before + (1 - tau) * online.numpy()
        np.testing.assert_allclose(target.numpy(), want, rtol=1e-5, atol=1e-6)
        moved += not np.allclose(online.numpy(), before)
    assert moved > 10  # the online network (and heads) trained


def _backbone(model):
    return {f"{la.name}/{w.name}": w.numpy() for la in backbone_layers(model) for w in la.weights}


def test_finetuning_from_an_ssl_run_drops_exactly_the_heads(runs, tmp_path):
    _, run_dir, _ = runs["byol"]
    source, _ = checkpoints.load_model(run_dir)
    model = build_classifier(load_config(runs["byol"][0]).model, 7)
    head = model.get_layer("head_dense").kernel.numpy().copy()
    report = restore_backbone(model, run_dir)
    assert report.dropped == tuple(sorted(CHECKPOINT_OBJECTS["byol"]))
    want, got = _backbone(source), _backbone(model)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_array_equal(model.get_layer("head_dense").kernel.numpy(), head)
    # A BYOL run whose checkpoint lacks part of the method's state is not silently half-read.
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    shutil.copy(os.path.join(run_dir, "config.yaml"), broken / "config.yaml")
    projection = keras.Sequential([keras.Input((512,)), keras.layers.Dense(4)])
    tf.train.CheckpointManager(
        tf.train.Checkpoint(model=source, ssl_projection=projection), str(broken / "checkpoints"), 1
    ).save(checkpoint_number=1)
    with pytest.raises(UsageError, match=r"is a byol run.*not exactly the method's"):
        restore_backbone(build_classifier(load_config(runs["byol"][0]).model, 7), str(broken))


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_a_detector_takes_the_backbone_of_an_ssl_run_and_nothing_else(runs, method):
    """COCO detection transfer from self-supervision (MoCo/BYOL's headline evaluation): a
    RetinaNet restores the SSL run's backbone; the method's heads and target are dropped, FPN and
    detection heads stay new."""
    from transfer_tf.config import DetectionConfig
    from transfer_tf.detection.retinanet import build_retinanet

    config, run_dir, _ = runs[method]
    source, _ = checkpoints.load_model(run_dir)
    detector = build_retinanet(
        load_config(config).model, DetectionConfig(image_size=64, head_convs=1), num_classes=3
    )
    new_layers = [w.numpy() for w in detector.get_layer("fpn").weights]
    report = restore_backbone(detector, run_dir)
    assert report.dropped == tuple(sorted(CHECKPOINT_OBJECTS[method]))
    want = _backbone(source)
    got = {k: v for k, v in _backbone(detector).items() if k in want}
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for got_w, before in zip(detector.get_layer("fpn").weights, new_layers, strict=True):
        np.testing.assert_array_equal(got_w.numpy(), before)


@pytest.mark.slow
def test_ssl_benchmark_detection_arms_train_a_retinanet_from_the_ssl_run(runs, tmp_path):
    """`benchmark_ssl --detection_steps`: a RetinaNet from the BYOL run (heads first, its backbone
    restored), scored by COCOeval, and a scratch one (everything trains from step 0)."""
    from transfer_tf.benchmarks import detection, ssl_detection

    dsize = detection.DetectionBenchmarkSize(
        model="resnet10", classes=2, coco_train_images=4, coco_val_images=3,
        raw_image_size=(96, 112), detection_image_size=128, budgets=(4,), batch_size=2,
        mixed_precision="none",
    )  # fmt: skip
    timings = []

    def timed(name, run, cfg, run_dir, **kwargs):
        timings.append((name, cfg.transfer.phases[0].trainable, kwargs["init_checkpoint"]))
        if name == "detection_scratch":  # its config is checked; one real detector is enough
            return {"eval": {"AP": 0.1, "AP50": 0.2, "AP75": 0.05, "APs": 0.0}}
        return run(cfg, run_dir, **kwargs)

    _, run_dir, _ = runs["byol"]
    scores = ssl_detection.detection_arms(
        str(tmp_path), dsize, {"byol": run_dir, "scratch": ""}, timed
    )
    assert timings == [("detection_byol", "fpn,head", run_dir), ("detection_scratch", "all", "")]
    assert scores["scratch"] == {"AP": 0.1, "AP50": 0.2, "AP75": 0.05}
    assert scores["byol"].keys() == {"AP", "AP50", "AP75"}
    assert all(-1.0 <= v <= 1.0 for v in scores["byol"].values())
    tuned, _ = checkpoints.load_model(str(tmp_path / "runs" / "detection_byol"))
    assert tuned.get_layer("fpn") is not None  # a detector, fine-tuned in its run folder


@pytest.mark.slow
def test_linear_probe_from_a_simclr_run(runs, tmp_path):
    config, run_dir, _ = runs["simclr"]
    cfg = load_config(
        config,
        ["transfer.preset=linear_probe", "train.train_steps=4", "ssl.method=supervised",
         "train.optimizer=sgd"],
    )  # fmt: skip
    result = run_finetuning(cfg, str(tmp_path / "probe"), init_checkpoint=run_dir)
    assert result["global_step"] == 4 and 0.0 <= result["eval"]["top_1_accuracy"] <= 1.0
    tuned, _ = checkpoints.load_model(str(tmp_path / "probe"))
    source, _ = checkpoints.load_model(run_dir)
    # The probe trained the head only: the backbone is the SSL one, BN statistics included.
    for key, value in _backbone(source).items():
        np.testing.assert_array_equal(_backbone(tuned)[key], value, err_msg=key)


def _cmd(config, model_dir):
    return [
        sys.executable,
        "-m",
        "pipelines.pretrain",
        f"--config={config}",
        f"--model_dir={model_dir}",
    ]


@pytest.mark.slow
def test_killed_byol_run_resumes_as_the_uninterrupted_run(runs, tmp_path):
    config, reference, _ = runs["byol"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(config, run_dir), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline, saved = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        saved = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
        if saved and int(saved.rsplit("-", 1)[1]) >= 4:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).rsplit("-", 1)[1])
    assert 4 <= killed_at < STEPS
    resumed = subprocess.run(
        _cmd(config, run_dir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {killed_at}" in resumed.stderr
    # Every saved value of the resumed run equals the uninterrupted one: classifier, heads,
    # target network (its momentum schedule continued from the restored global step),
    # optimizer slots and the step.
    want = checkpoints.resolve_checkpoint(reference)
    got = checkpoints.resolve_checkpoint(str(run_dir))
    assert want.endswith(f"ckpt-{STEPS}") and got.endswith(f"ckpt-{STEPS}")
    names = [
        n for n, _ in tf.train.list_variables(want)
        if not n.startswith(("train_iterator", "save_counter", "_CHECKPOINTABLE"))
    ]  # fmt: skip
    assert any(n.startswith("ssl_target_encoder/") for n in names)
    a, b = tf.train.load_checkpoint(want), tf.train.load_checkpoint(got)
    for name in names:
        np.testing.assert_allclose(b.get_tensor(name), a.get_tensor(name), rtol=1e-5, atol=1e-6,
                                   err_msg=name)  # fmt: skip


def test_evaluate_binary_reports_the_runs_knn_top1(runs, tmp_path):
    """`pipelines.evaluate` on a self-supervised run: kNN top-1 of its checkpoint (the run's own
    label-free eval at its last step, recomputed), not the top-1 of its untrained head."""
    import json

    from transfer_tf.demo.inprocess import run_call
    from transfer_tf.training.evaluation import evaluate_run

    _, run_dir, _ = runs["simclr"]
    out = tmp_path / "knn.json"
    printed = json.loads(
        run_call("pipelines.evaluate", [f"--model_dir={run_dir}", f"--output={out}"])
    )
    ((step, in_run),) = read_scalars(run_dir)["eval/knn_top1"]
    assert step == STEPS // 2 and printed["knn_k"] == 5
    assert printed["knn_top1"] == pytest.approx(in_run, abs=1e-6)
    assert json.loads(out.read_text())["knn_top1"] == printed["knn_top1"]
    assert "top_1_accuracy" not in printed
    with pytest.raises(UsageError, match="self-supervised run .* transfer_tf.ssl.knn"):
        evaluate_run(run_dir)
