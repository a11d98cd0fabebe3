"""SimCLR's NT-Xent against a NumPy reference, on one replica and with cross-replica negatives on
two mirrored logical CPUs; BYOL's normalized regression loss values and stop-gradient."""

import numpy as np
import pytest
import tensorflow as tf
from two_replicas import run_on_two_cpus

from transfer_tf.ssl import losses


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """SimCLR's code (tf2/objective.py `add_contrastive_loss`): for each image i, the cross-entropy
    of view 1's anchor over [view 2, view 1 minus itself] plus view 2's likewise, averaged over the
    N images, i.e. `mean(loss_a + loss_b)`: twice the paper's mean over the 2N anchors."""
    return nt_xent_reference_and_grads(z1, z2, temperature)[0]


def nt_xent_reference_and_grads(z1: np.ndarray, z2: np.ndarray, temperature: float):
    """(loss, dloss/dz1, dloss/dz2) of `nt_xent_reference`, in float64, by hand: the softmax
    cross-entropy gradient over the similarity matrix, chained through the L2 normalisation."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    u = z / norms
    n = len(z1)
    sim = u @ u.T / temperature
    np.fill_diagonal(sim, -np.inf)
    positive = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    log_softmax = sim - np.log(np.exp(sim).sum(axis=1, keepdims=True))
    loss = -log_softmax[np.arange(2 * n), positive].sum() / n
    # d loss / d sim[k, j] = (softmax[k, j] - [j is k's positive]) / n; sim = u u^T / T.
    g = np.exp(log_softmax)
    g[np.arange(2 * n), positive] -= 1.0
    g /= n
    grad_u = (g + g.T) @ u / temperature
    grad_z = (grad_u - u * np.sum(grad_u * u, axis=1, keepdims=True)) / norms
    return float(loss), grad_z[:n], grad_z[n:]


def test_nt_xent_reference_gradient_is_the_finite_difference():
    # The hand-written gradient of the reference is itself checked, numerically.
    rng = np.random.default_rng(7)
    z1, z2 = rng.normal(size=[3, 4]), rng.normal(size=[3, 4])
    _, g1, _ = nt_xent_reference_and_grads(z1, z2, 0.3)
    eps = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 3)]:
        plus, minus = z1.copy(), z1.copy()
        plus[i, j] += eps
        minus[i, j] -= eps
        numeric = (nt_xent_reference(plus, z2, 0.3) - nt_xent_reference(minus, z2, 0.3)) / (2 * eps)
        assert g1[i, j] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_numpy_reference(temperature):
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=[6, 5]).astype("float32")
    z2 = (z1 + 0.5 * rng.normal(size=[6, 5])).astype("float32")
    expected, grad1, grad2 = nt_xent_reference_and_grads(z1, z2, temperature)
    v1, v2 = tf.Variable(z1), tf.Variable(z2)
    with tf.GradientTape() as tape:
        loss = losses.nt_xent_loss(v1, v2, temperature)
    got1, got2 = tape.gradient(loss, [v1, v2])
    # SimCLR's scale (the sum of the two views' losses), on which its LR and decay were tuned.
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(got1.numpy(), grad1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got2.numpy(), grad2, rtol=1e-4, atol=1e-6)
    per_example = losses.nt_xent_per_example(z1, z2, temperature)
    assert per_example.shape == (6,) and per_example.dtype == tf.float32
    # Scale-free (normalised inside) and symmetric in the two views.
    swapped = float(losses.nt_xent_loss(3.0 * z2, z1, temperature))
    assert swapped == pytest.approx(expected, rel=1e-5)


def test_nt_xent_lower_for_matching_views_and_bfloat16_input():
    rng = np.random.default_rng(1)
    z1 = rng.normal(size=[8, 16]).astype("float32")
    matched = float(losses.nt_xent_loss(z1, z1 + 0.01, 0.1))
    unrelated = float(losses.nt_xent_loss(z1, rng.normal(size=[8, 16]).astype("float32"), 0.1))
    assert matched < 0.1 < unrelated
    # Mixed-precision projections are computed in float32.
    half = losses.nt_xent_loss(tf.cast(z1, tf.bfloat16), tf.cast(z1 + 0.01, tf.bfloat16), 0.1)
    assert half.dtype == tf.float32


def test_contrastive_accuracy_and_embedding_std():
    z = np.eye(4, dtype="float32")
    assert float(losses.contrastive_accuracy(z, z)) == 1.0
    assert float(losses.contrastive_accuracy(z, z[[1, 0, 2, 3]])) == 0.5
    collapsed = np.ones([8, 4], "float32")
    assert float(losses.embedding_std(collapsed)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.embedding_std(np.eye(8, dtype="float32"))) > 0.2


def test_normalized_regression_values():
    p = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 3.0]], "float32")
    t = np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [1.0, 1.0]], "float32")
    # same direction 0, orthogonal 2, opposite 4; scale-free.
    np.testing.assert_allclose(losses.normalized_regression(p, t), [0.0, 2.0, 4.0, 0.0], atol=1e-6)
    rng = np.random.default_rng(2)
    p1, p2, t1, t2 = (rng.normal(size=[5, 3]).astype("float32") for _ in range(4))

    def cos(a, b):
        return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    expected = np.mean((2 - 2 * cos(p1, t2)) + (2 - 2 * cos(p2, t1)))
    assert float(losses.byol_loss(p1, p2, t1, t2)) == pytest.approx(expected, rel=1e-5)


def test_byol_target_gets_no_gradient():
    p = tf.Variable([[1.0, 2.0]])
    t = tf.Variable([[2.0, -1.0]])
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(losses.normalized_regression(p, t))
    assert tape.gradient(loss, t) is None
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, p)))) > 0.0


SCRIPT = r"""
from transfer_tf.ssl import losses
rng = np.random.default_rng(0)
x1 = rng.normal(size=[8, 6]).astype("float32")
x2 = (x1 + 0.3 * rng.normal(size=[8, 6])).astype("float32")
w0 = rng.normal(size=[6, 5]).astype("float32")

def run(name, fn):
    strategy = make_strategy(name)
    n = strategy.num_replicas_in_sync
    with strategy.scope():
        w = tf.Variable(w0)
    parts = strategy.experimental_distribute_values_from_function(
        lambda ctx: tuple(tf.constant(np.split(x, n)[ctx.replica_id_in_sync_group]) for x in (x1, x2)))

    @tf.function
    def step(parts):
        def replica(a, b):
            with tf.GradientTape() as tape:
                loss = fn(tf.matmul(a, w), tf.matmul(b, w))
            return loss, tape.gradient(loss, w)
        loss, grad = strategy.run(replica, args=parts)
        return strategy.reduce("SUM", loss, None), strategy.reduce("SUM", grad, None)

    loss, grad = step(parts)
    return n, float(loss), grad.numpy()

nt = lambda a, b: losses.nt_xent_loss(a, b, 0.2)
byol = lambda a, b: losses.byol_loss(a, b, tf.reverse(b, [1]), tf.reverse(a, [1]))
n1, l1, g1 = run("one_device", nt)
n2, l2, g2 = run("mirrored", nt)
_, b1, bg1 = run("one_device", byol)
_, b2, bg2 = run("mirrored", byol)
z1, z2 = x1 @ w0, x2 @ w0
with make_strategy("mirrored").scope():  # cross-replica context of 2 replicas: refused
    try:
        losses.nt_xent_loss(z1, z2)
        refused = False
    except ValueError:
        refused = True
local_only = 0.5 * sum(float(losses.nt_xent_loss(z1[i:i + 4], z2[i:i + 4], 0.2)) for i in (0, 4))
print(json.dumps({"replicas": [n1, n2], "loss1": l1, "loss2": l2, "local_only": local_only,
                  "grad_diff": float(np.max(np.abs(g1 - g2))), "grad_max": float(np.max(np.abs(g1))),
                  "grad1": g1.tolist(), "grad2": g2.tolist(), "x1": x1.tolist(), "x2": x2.tolist(),
                  "byol1": b1, "byol2": b2, "byol_grad_diff": float(np.max(np.abs(bg1 - bg2))),
                  "z1": z1.tolist(), "z2": z2.tolist(), "refused": refused}))
"""


@pytest.mark.slow
def test_cross_replica_negatives_equal_one_replica_on_the_global_batch():
    result = run_on_two_cpus(SCRIPT, timeout=240)
    assert result["replicas"] == [1, 2]
    z1, z2 = np.array(result["z1"]), np.array(result["z2"])
    reference, dz1, dz2 = nt_xent_reference_and_grads(z1, z2, 0.2)
    assert result["loss1"] == pytest.approx(reference, rel=1e-5)
    assert result["loss2"] == pytest.approx(reference, rel=1e-5)
    # z = x @ w, so d loss / d w = x1^T dz1 + x2^T dz2: both runs' gradients are the reference's.
    grad_w = np.array(result["x1"]).T @ dz1 + np.array(result["x2"]).T @ dz2
    for key in ("grad1", "grad2"):
        np.testing.assert_allclose(np.array(result[key]), grad_w, rtol=1e-4, atol=1e-6)
    # Two replicas, each 4 of the 8 images, negatives gathered: the same loss and gradient.
    assert result["loss2"] == pytest.approx(result["loss1"], rel=1e-5)
    assert result["grad_max"] > 1e-3
    assert result["grad_diff"] < 1e-5 * max(1.0, result["grad_max"]), result
    # A per-replica-only loss (keras-cv's SimCLRLoss) is measurably different: the test can fail.
    assert abs(result["local_only"] - result["loss1"]) > 1e-2
    # BYOL (no gathering) sums to the global mean too.
    assert result["byol2"] == pytest.approx(result["byol1"], rel=1e-5)
    assert result["byol_grad_diff"] < 1e-5
    # Outside strategy.run with two replicas the loss would silently see one replica's batch.
    assert result["refused"]
