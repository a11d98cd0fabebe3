"""Per-phase optimizer state, LR multipliers and fine-tuning EMA, through `run_finetuning`.

One short fine-tuning run (resnet10, 32 px, one constant batch so the data stream cannot matter)
is shared by the first tests: probe (head, 3 steps) then all (1 step, `lr_multipliers: {stem: 0.1}`)
under AdamW, compared with fresh Keras AdamW steps on the same gradient. (With zero-initialised residual gammas only the
stem and the projection shortcuts get gradients at first, so those are the kernels compared.)
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import ConfigError, TrainConfig, config_from_dict
from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import build_classifier
from transfer_tf.training import schedules
from transfer_tf.training.checkpoints import load_model
from transfer_tf.training.loop import Trainer
from transfer_tf.training.losses import softmax_cross_entropy
from transfer_tf.training.optimizers import make_optimizer
from transfer_tf.training.strategy import make_strategy
from transfer_tf.transfer.finetune import run_finetuning

LR, WD, PROBE_STEPS = 1e-3, 0.05, 3
# The config's LR is per 256 images; AdamW at batch 8 trains at it x sqrt(8/256) = LR.
BASE_LR = schedules.base_learning_rate_for(LR, 8, "adamw")
STEM_KERNEL = "conv1_conv/kernel"
STAGE3_KERNEL = "conv4_block1_0_conv/kernel"

_rng = np.random.default_rng(0)
IMAGES = _rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
LABELS = np.eye(4, dtype=np.float32)[np.arange(8) % 4]


def _dataset_fn(ctx):
    return tf.data.Dataset.from_tensors((IMAGES, LABELS)).repeat()


def _cfg(multipliers=None, train_ema=0.0):
    ft = {"name": "ft", "trainable": "all", "steps": 1, "base_learning_rate": BASE_LR}
    ft.update(lr_schedule="constant", lr_multipliers=multipliers or {})
    return config_from_dict(
        {
            "deterministic": False,
            "data": {"num_classes": 4, "image_size": 32},
            "model": {"name": "resnet10", "zero_init_residual_gamma": True},
            "train": {
                "global_batch_size": 8,
                "strategy": "one_device",
                "log_every_steps": 100,
                "ema_decay": train_ema,
            },
            "transfer": {
                "optimizer": "adamw",
                "weight_decay": WD,
                "phases": [
                    {
                        "name": "probe",
                        "trainable": "head",
                        "steps": PROBE_STEPS,
                        "base_learning_rate": BASE_LR,
                        "lr_schedule": "constant",
                    },
                    ft,
                ],
            },
        }
    )


def _run(cfg, model_dir):
    snapshots = []

    def on_phase_end(phase, model):
        snapshots.append({v.path: v.numpy().copy() for v in model.weights})

    run_finetuning(cfg, model_dir, train_dataset_fn=_dataset_fn, on_phase_end=on_phase_end)
    return snapshots


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("optstate"))
    # The run also sets the PRETRAINING recipe's train.ema_decay, which fine-tuning must ignore.
    cfg = _cfg({"stem": 0.1}, train_ema=0.999)
    before, after = _run(cfg, model_dir)
    # Fresh Keras AdamW steps on the gradient at the phase-1 weights: the reference.
    keras.utils.set_random_seed(0)
    ref = build_classifier(cfg.model, 4)
    for v in ref.weights:
        v.assign(before[v.path])
    kernels = [v for v in ref.weights if v.path in (STEM_KERNEL, STAGE3_KERNEL)]
    with tf.GradientTape() as tape:
        logits = ref(IMAGES, training=True)
        loss = tf.reduce_mean(softmax_cross_entropy(0.0)(LABELS, logits))
    grads = tape.gradient(loss, kernels)
    keras.optimizers.AdamW(LR, weight_decay=WD).apply_gradients(zip(grads, kernels, strict=True))
    fresh = {v.path: v.numpy() - before[v.path] for v in kernels}
    got = {k: after[k] - before[k] for k in fresh}
    return {"fresh": fresh, "got": got, "final": after, "model_dir": model_dir}


@pytest.mark.slow
def test_adamw_layer_unfrozen_in_phase_2_takes_a_fresh_adam_first_step(run):
    want, got = run["fresh"][STAGE3_KERNEL], run["got"][STAGE3_KERNEL]
    # A fresh Adam's first step is ~lr * sign(g) per element; the run's must be the same step
    # (with the phase-1 step count it is ~0.55x as large here, and several times too large after
    # a long probe). Tolerance: float32 gradient differences seen through g / (|g| + eps).
    assert np.max(np.abs(want)) > 0.5 * LR
    np.testing.assert_allclose(got, want, atol=3e-6)


@pytest.mark.slow
def test_lr_multiplier_scales_an_adamw_update(run):
    # Adam normalises a scaled gradient away; a scaled learning rate scales the whole update
    # (the decoupled decay included): 0.1 x a fresh AdamW step at the phase LR.
    want, got = run["fresh"][STEM_KERNEL], run["got"][STEM_KERNEL]
    assert np.max(np.abs(want)) > 0.5 * LR
    np.testing.assert_allclose(got, 0.1 * want, atol=3e-7)


@pytest.mark.slow
def test_finetuning_ignores_the_pretraining_ema_decay(run):
    # The run had train.ema_decay=0.999 and no transfer.ema_decay: no EMA, so the loaded model
    # is the final raw model (with an EMA it would be the average).
    model, _ = load_model(run["model_dir"])
    for v in model.weights:
        np.testing.assert_array_equal(v.numpy(), run["final"][v.path], err_msg=v.path)


def _tiny_trainer(model_dir, ema_decay=0.0):
    strategy = make_strategy("one_device")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3, name="conv"),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(4, name="dense"),
            ]
        )
        optimizer = make_optimizer(TrainConfig(optimizer="adamw"))
    return Trainer(
        model,
        optimizer,
        strategy,
        model_dir,
        global_batch_size=8,
        checkpoint_every_steps=1,
        log_every_steps=100,
        ema_decay=ema_decay,
    )


def test_phase_state_survives_a_resume_mid_phase_and_resets_at_a_boundary(tmp_path):
    # Phases [0, 2) dense only and [2, 5) everything. Interrupted runs (the data runs out) that
    # resume from the phase boundary (step 2) and from inside phase 2 (step 3) must end where an
    # uninterrupted run does: a fresh optimizer at step 2, the phase-2 moments kept at step 3.
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    labels = np.eye(4, dtype="float32")[np.arange(8) % 4]
    loss = softmax_cross_entropy()
    lr = schedules.warmup_constant(0.01)

    def data(n):
        ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
        return lambda ctx: ds.take(n)

    def train(trainer, n=100, phases=2):
        trainer.restore()
        dense = trainer.model.get_layer("dense").trainable_weights
        for start, end, variables in ((0, 2, dense), (2, 5, None))[:phases]:
            if trainer.step < end:
                trainer.train(
                    data(n), end_step=end, lr_schedule=lr, loss_fn=loss,
                    trainable_variables=variables, phase_start_step=start,
                )  # fmt: skip

    whole = _tiny_trainer(str(tmp_path / "whole"), ema_decay=0.9)
    train(whole)
    split_dir = str(tmp_path / "split")
    train(_tiny_trainer(split_dir, ema_decay=0.9), phases=1)  # stops at the boundary
    with pytest.raises(tf.errors.OutOfRangeError):  # one step into phase 2, then no data
        train(_tiny_trainer(split_dir, ema_decay=0.9), n=1)
    assert tf.train.latest_checkpoint(split_dir + "/checkpoints").endswith("-3")
    split = _tiny_trainer(split_dir, ema_decay=0.9)
    train(split)
    assert split.step == whole.step == 5
    assert int(split.optimizer.iterations.numpy()) == 3  # steps taken in phase 2
    pairs = zip(
        whole.model.weights + list(whole.ema.averages),
        split.model.weights + list(split.ema.averages),
        strict=True,
    )
    for a, b in pairs:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # Resuming the phase-2 checkpoint into a schedule whose phase 2 starts elsewhere: an error.
    moved = _tiny_trainer(split_dir)
    with pytest.raises(UsageError, match="does not match|schedule changed"):
        moved.restore()
        moved.train(data(100), end_step=6, lr_schedule=lr, loss_fn=loss, phase_start_step=4)


def test_optimizer_choices_and_weight_decay_defaults():
    from transfer_tf.training.optimizers import resolve_weight_decay

    cfg = config_from_dict({"train": {"optimizer": "adam"}, "transfer": {"optimizer": "adam"}})
    assert cfg.train.optimizer == "adam"
    # -1 = the optimizer's own default: L2 1e-4 for SGD/LARS, none for Adam, decoupled 0.05 for
    # AdamW (multiplied by the LR each step, so SGD's 1e-4 would be no decay at all).
    assert resolve_weight_decay("sgd", -1.0) == 1e-4
    assert resolve_weight_decay("lars", -1.0) == 1e-4
    assert resolve_weight_decay("adam", -1.0) == 0.0
    assert resolve_weight_decay("adamw", -1.0) == 0.05
    assert resolve_weight_decay("adamw", 0.0) == 0.0
    with pytest.raises(ConfigError, match=r"transfer.weight_decay.*adamw"):
        config_from_dict({"transfer": {"optimizer": "adamw", "weight_decay": 1e-4}})
    with pytest.raises(ConfigError, match=r"train.weight_decay"):
        config_from_dict({"train": {"weight_decay": -0.5}})
    assert dataclasses.asdict(config_from_dict({}).transfer)["ema_decay"] == 0.0
