"""Per-phase optimizer state, LR multipliers and fine-tuning EMA, through `run_finetuning`.

Two short fine-tuning runs (resnet18, 32 px, one constant batch so the data stream cannot matter)
are shared by the tests: A = probe (head, 3 steps) then all (1 step) under AdamW; B = the same with
`lr_multipliers: {stem: 0.1}` in the second phase. (With zero-initialised residual gammas only the
stem and the projection shortcuts get gradients at first, so those are the kernels compared.)
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import ConfigError, config_from_dict
from transfer_tf.models.resnet import build_classifier
from transfer_tf.training.checkpoints import load_model
from transfer_tf.training.losses import softmax_cross_entropy
from transfer_tf.transfer.finetune import run_finetuning

LR, WD, PROBE_STEPS = 1e-3, 0.05, 3
STEM_KERNEL = "conv1_conv/kernel"
STAGE3_KERNEL = "conv4_block1_0_conv/kernel"

_rng = np.random.default_rng(0)
IMAGES = _rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
LABELS = np.eye(4, dtype=np.float32)[np.arange(8) % 4]


def _dataset_fn(ctx):
    return tf.data.Dataset.from_tensors((IMAGES, LABELS)).repeat()


def _cfg(multipliers=None, train_ema=0.0):
    ft = {"name": "ft", "trainable": "all", "steps": 1, "learning_rate": LR}
    ft.update(lr_schedule="constant", lr_multipliers=multipliers or {})
    return config_from_dict(
        {
            "deterministic": False,
            "data": {"num_classes": 4, "image_size": 32},
            "model": {"name": "resnet18"},
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
                        "learning_rate": LR,
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
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("optstate")
    # Run A also sets the PRETRAINING recipe's train.ema_decay, which fine-tuning must ignore.
    a = _run(_cfg(train_ema=0.999), str(base / "a"))
    b = _run(_cfg({"stem": 0.1}), str(base / "b"))
    return {"a": a, "b": b, "a_dir": str(base / "a"), "cfg": _cfg()}


@pytest.mark.slow
def test_adamw_layer_unfrozen_in_phase_2_takes_a_fresh_adam_first_step(runs):
    before, after = runs["a"]
    cfg = runs["cfg"]
    # A fresh Keras AdamW applied to the same gradient at the phase-1 weights.
    keras.utils.set_random_seed(0)
    ref = build_classifier(cfg.model, 4)
    for v in ref.weights:
        v.assign(before[v.path])
    kernel = next(v for v in ref.weights if v.path == STEM_KERNEL)
    with tf.GradientTape() as tape:
        logits = ref(IMAGES, training=True)
        loss = tf.reduce_mean(softmax_cross_entropy(0.0)(LABELS, logits))
    grad = tape.gradient(loss, kernel)
    fresh = keras.optimizers.AdamW(LR, weight_decay=WD)
    fresh.apply_gradients([(grad, kernel)])
    want = kernel.numpy() - before[STEM_KERNEL]
    got = after[STEM_KERNEL] - before[STEM_KERNEL]
    # A fresh Adam's first step is ~lr * sign(g) per element; the run's must be the same step
    # (with the phase-1 step count it is ~0.55x as large here, and several times too large after
    # a long probe). Tolerance: float32 gradient differences seen through g / (|g| + eps).
    assert np.max(np.abs(want)) > 0.5 * LR
    np.testing.assert_allclose(got, want, atol=3e-6)


@pytest.mark.slow
def test_lr_multiplier_scales_an_adamw_update(runs):
    (a_before, a_after), (b_before, b_after) = runs["a"], runs["b"]
    for path in (STEM_KERNEL, STAGE3_KERNEL):  # phase 1 is identical in both runs
        np.testing.assert_array_equal(a_before[path], b_before[path])
    delta = {k: (a_after[k] - a_before[k], b_after[k] - b_before[k]) for k in a_after}
    da, db = delta[STEM_KERNEL]
    # Adam normalises a scaled gradient away; a scaled learning rate scales the whole update
    # (the decoupled decay included).
    np.testing.assert_allclose(db, 0.1 * da, rtol=1e-4, atol=1e-9)
    da, db = delta[STAGE3_KERNEL]
    np.testing.assert_allclose(db, da, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_finetuning_ignores_the_pretraining_ema_decay(runs):
    # Run A had train.ema_decay=0.999 and no transfer.ema_decay: no EMA, so the loaded model
    # is the final raw model (with an EMA it would be the average).
    model, _ = load_model(runs["a_dir"])
    final = runs["a"][-1]
    for v in model.weights:
        np.testing.assert_array_equal(v.numpy(), final[v.path], err_msg=v.path)


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
