"""Which views share batch-norm statistics, per method (issue 31 item 4): BYOL runs each view
through the online and target networks on its own (BN statistics per view, as its code), SimCLR
runs both views as one batch (BN over both, as its code)."""

import keras
import numpy as np
import tensorflow as tf

from transfer_tf.config import load_config
from transfer_tf.models.resnet import build_classifier
from transfer_tf.ssl import methods

TINY = ["model.name=resnet10", "data.image_size=16", "data.num_classes=3"]


def _objective(method: str):
    widths = ["ssl.projection_widths=[32, 16]"]
    if method == "byol":
        widths.append("ssl.predictor_widths=[32, 16]")
    cfg = load_config(None, [f"ssl.method={method}", *TINY, *widths])
    keras.utils.set_random_seed(0)
    model = build_classifier(cfg.model, 3)
    return methods.make_objective(cfg, model, total_steps=10)


def _views(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, [4, 16, 16, 3]).astype("uint8")


def _captured(objective, loss_name: str, batch, monkeypatch) -> list:
    """The embeddings `replica_loss` hands to `losses.<loss_name>` for `batch`."""
    seen = []
    real = getattr(methods.losses, loss_name)

    def spy(*args, **kwargs):
        seen.append([np.asarray(a) for a in args[:4] if isinstance(a, tf.Tensor)])
        return real(*args, **kwargs)

    monkeypatch.setattr(methods.losses, loss_name, spy)
    objective.replica_loss(batch)
    monkeypatch.undo()
    return seen[0]


def test_byol_view_embeddings_do_not_depend_on_the_other_view(monkeypatch):
    objective = _objective("byol")
    a, b, c = _views(0), _views(1), _views(2)
    no_labels = tf.zeros([4, 0])
    # byol_loss(p1, p2, t1, t2): view A's online prediction and target projection.
    p1, _, t1, _ = _captured(objective, "byol_loss", ((a, b), no_labels), monkeypatch)
    q1, q2, u1, _ = _captured(objective, "byol_loss", ((a, c), no_labels), monkeypatch)
    np.testing.assert_allclose(q1, p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u1, t1, rtol=1e-5, atol=1e-6)
    # The views are really different inputs (the test could fail): view C's prediction is not A's.
    assert np.max(np.abs(q2 - q1)) > 1e-3


def test_simclr_normalises_both_views_together(monkeypatch):
    objective = _objective("simclr")
    a, b, c = _views(0), _views(1), _views(2)
    no_labels = tf.zeros([4, 0])
    z1, _ = _captured(objective, "nt_xent_loss", ((a, b), no_labels), monkeypatch)
    y1, _ = _captured(objective, "nt_xent_loss", ((a, c), no_labels), monkeypatch)
    # SimCLR's code concatenates the views: BN statistics over both, so view B moves A's embedding.
    assert np.max(np.abs(z1 - y1)) > 1e-3
