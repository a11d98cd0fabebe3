"""BYOL's target network: the cosine momentum schedule, the EMA update of trainable weights only,
and under MirroredStrategy a full online step + target update keeping every replica identical."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from two_replicas import run_on_two_cpus

from transfer_tf.models.resnet import BatchNormalization
from transfer_tf.ssl import momentum


def test_cosine_momentum_schedule():
    def tau(k):
        return float(momentum.cosine_momentum(k, 1000, 0.996))

    assert tau(0) == pytest.approx(0.996, abs=1e-7)
    assert tau(500) == pytest.approx(0.998, abs=1e-7)
    assert tau(1000) == 1.0 and tau(2000) == 1.0
    k = 250
    assert tau(k) == pytest.approx(1 - 0.004 * (math.cos(math.pi * k / 1000) + 1) / 2, abs=1e-7)
    values = [tau(k) for k in range(0, 1001, 50)]
    assert values == sorted(values)
    with pytest.raises(ValueError):
        momentum.cosine_momentum(0, 0)


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="dense"), BatchNormalization(name="bn")]
    )


def test_update_moves_trainable_weights_only_and_copy_is_exact():
    online, target = _model(0), _model(1)
    # Moving statistics differ and must stay the target's own.
    target.get_layer("bn").moving_mean.assign([5.0, 5.0, 5.0, 5.0])
    updater = momentum.MomentumUpdater(online, target, total_steps=10, base=0.9)
    before = [w.numpy() for w in target.weights]
    tau = float(updater.update(tf.distribute.get_strategy(), 0))
    assert tau == pytest.approx(0.9)
    for o, t, t0 in zip(online.weights, target.weights, before, strict=True):
        if t.trainable:
            np.testing.assert_allclose(t.numpy(), 0.9 * t0 + 0.1 * o.numpy(), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(t.numpy(), t0)
    updater.copy_online_to_target()
    for o, t in zip(online.weights, target.weights, strict=True):
        if t.trainable:
            np.testing.assert_array_equal(t.numpy(), o.numpy())
    # At the end of the schedule (tau = 1) the target stops moving.
    online.get_layer("dense").kernel.assign_add(tf.ones([3, 4]))
    held = target.get_layer("dense").kernel.numpy()
    updater.update(tf.distribute.get_strategy(), 10)
    np.testing.assert_array_equal(target.get_layer("dense").kernel.numpy(), held)


def test_mismatched_architectures_are_refused():
    wide = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="online"):
        momentum.paired_weights(_model(0), wide)


SCRIPT = r"""
from transfer_tf.models.resnet import BatchNormalization
from transfer_tf.ssl import losses, momentum

def build(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="dense"),
                             BatchNormalization(synchronized=True, name="bn"),
                             keras.layers.Dense(3, name="out")])

rng = np.random.default_rng(0)
x1 = rng.normal(size=[8, 6]).astype("float32")
x2 = (x1 + 0.3 * rng.normal(size=[8, 6])).astype("float32")
strategy = make_strategy("mirrored")
with strategy.scope():
    online, target = build(0), build(1)
    optimizer = keras.optimizers.SGD(0.5)
    optimizer.build(online.trainable_variables)
updater = momentum.MomentumUpdater(online, target, total_steps=4, base=0.9)
updater.copy_online_to_target(strategy)
parts = strategy.experimental_distribute_values_from_function(
    lambda ctx: tuple(tf.constant(np.split(x, 2)[ctx.replica_id_in_sync_group]) for x in (x1, x2)))

def replica_step(a, b):
    t1, t2 = target(a, training=True), target(b, training=True)
    with tf.GradientTape() as tape:
        loss = losses.byol_loss(online(a, training=True), online(b, training=True), t1, t2)
    variables = online.trainable_variables + target.trainable_variables
    grads = tape.gradient(loss, variables)
    n = len(online.trainable_variables)
    target_grads = sum(g is not None for g in grads[n:])
    optimizer.apply_gradients(zip(grads[:n], variables[:n]))
    return loss, target_grads

@tf.function
def step(parts, k):
    loss, target_grads = strategy.run(replica_step, args=parts)
    tau = updater.update(strategy, k)
    return strategy.reduce("SUM", loss, None), tau, target_grads

def copies(model):
    return [[c.numpy() for c in getattr(w.value, "values", [w.value])] for w in model.weights]

gaps, ema_errors = [], []
for k in range(3):
    t_before = [c[0] for c in copies(target)]
    loss, tau, target_grads = step(parts, tf.constant(k, tf.int64))
    online_now, target_now = copies(online), copies(target)
    gaps += [float(np.max(np.abs(c[0] - c[1]))) for c in online_now + target_now]
    for w, o, t, t0 in zip(target.weights, online_now, target_now, t_before):
        if w.trainable:
            expected = float(tau) * t0 + (1 - float(tau)) * o[0]
            ema_errors.append(float(np.max(np.abs(t[0] - expected))))
init = build(0).get_layer("dense").kernel.numpy()
online_moved = float(np.max(np.abs(online.get_layer("dense").kernel.numpy() - init)))
target_moved = float(np.max(np.abs(target.get_layer("dense").kernel.numpy() - init)))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "replica_gap": max(gaps),
                  "ema_error": max(ema_errors), "target_grads": int(strategy.experimental_local_results(target_grads)[0]),
                  "loss": float(loss), "tau_last": float(tau), "online_moved": online_moved,
                  "target_moved": target_moved}))
"""


@pytest.mark.slow
def test_mirrored_online_step_and_target_update_keep_replicas_identical():
    result = run_on_two_cpus(SCRIPT, timeout=240)
    assert result["replicas"] == 2
    # The online network trained, and the target (a copy at step 0) followed part of the way.
    assert result["online_moved"] > 1e-3 and 0 < result["target_moved"] < result["online_moved"]
    # Every replica's copy of every online and target variable: bit-identical after 3 steps.
    assert result["replica_gap"] == 0.0, result
    # The target followed the EMA of the (trained) online weights with tau(k).
    assert result["ema_error"] < 1e-6, result
    assert result["tau_last"] == pytest.approx(1 - 0.1 * (math.cos(math.pi * 2 / 4) + 1) / 2)
    # The target got no gradient (stop_gradient in the loss).
    assert result["target_grads"] == 0
    assert np.isfinite(result["loss"])
