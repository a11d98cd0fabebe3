"""Weighted kNN top-1: a separable set scores 1.0, shuffled labels score lower, and the chunked
search equals a brute-force NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from two_replicas import run_on_two_cpus

from transfer_tf.ssl import knn


def _clusters(n_per_class: int, classes: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:classes] * 5.0
    labels = np.repeat(np.arange(classes), n_per_class)
    points = centres[labels] + rng.normal(size=[len(labels), dim])
    return points.astype("float32"), labels


def knn_reference(train, labels, queries, classes, k, temperature):
    t = train / np.linalg.norm(train, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ t.T
    idx = np.argsort(-sims, axis=1)[:, :k]
    votes = np.zeros([len(q), classes])
    for row in range(len(q)):
        for j in idx[row]:
            votes[row, labels[j]] += np.exp(sims[row, j] / temperature)
    return votes.argmax(1)


def test_separable_set_scores_one_and_shuffled_labels_score_lower():
    train, train_labels = _clusters(30, 4, 8, seed=0)
    queries, query_labels = _clusters(10, 4, 8, seed=1)
    # Small chunks: the running top-k merge across train chunks is exercised.
    top1 = knn.knn_top1(train, train_labels, queries, query_labels, 4, eval_chunk=7, train_chunk=9)
    assert top1 == 1.0
    shuffled = np.random.default_rng(2).permutation(train_labels)
    assert knn.knn_top1(train, shuffled, queries, query_labels, 4) < 0.7
    # One-hot labels are accepted.
    one_hot = np.eye(4, dtype="float32")
    assert knn.knn_top1(train, one_hot[train_labels], queries, one_hot[query_labels], 4) == 1.0


@pytest.mark.parametrize("train_chunk", [5, 64, 10_000])
def test_chunked_search_matches_brute_force(train_chunk):
    rng = np.random.default_rng(3)
    train = rng.normal(size=[53, 6]).astype("float32")
    labels = rng.integers(0, 5, 53)
    queries = rng.normal(size=[17, 6]).astype("float32")
    expected = knn_reference(train, labels, queries, 5, k=20, temperature=0.07)
    got = knn.knn_predict(train, labels, queries, 5, eval_chunk=4, train_chunk=train_chunk)
    np.testing.assert_array_equal(got.numpy(), expected)
    # k larger than the train set is clipped.
    few = knn.knn_predict(train[:3], labels[:3], queries, 5, k=20)
    assert few.shape == (17,)


def test_knn_eval_through_evaluate_model():
    train, train_labels = _clusters(20, 3, 5, seed=4)
    queries, query_labels = _clusters(6, 3, 5, seed=5)
    one_hot = np.eye(3, dtype="float32")
    encoder = keras.Sequential([keras.Input((5,)), keras.layers.Identity()])

    def dataset_fn(x, y):
        return lambda ctx: tf.data.Dataset.from_tensor_slices((x, one_hot[y])).batch(8)

    strategy = tf.distribute.get_strategy()
    metrics = knn.knn_eval(
        encoder, strategy, dataset_fn(train, train_labels), dataset_fn(queries, query_labels), 3
    )
    assert metrics == {"knn_top1": 1.0}
    shuffled = np.random.default_rng(6).permutation(train_labels)
    low = knn.knn_eval(
        encoder, strategy, dataset_fn(train, shuffled), dataset_fn(queries, query_labels), 3
    )
    assert low["knn_top1"] < 0.8


LABELED_SUBSET_SCRIPT = r"""
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from transfer_tf.config import load_config
from two_replicas import run_on_two_cpus

from transfer_tf.ssl import knn
from transfer_tf.training.evaluation import evaluate_model
import test_ssl_pretrain as t

root = tempfile.mkdtemp()
t._write_shards(os.path.join(root, "train"), 64, seed=0)
t._write_shards(os.path.join(root, "validation"), 16, seed=1)
path = os.path.join(root, "c.yaml")
with open(path, "w") as f:
    f.write(t._config_text(root, "simclr"))
encoder = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D()])
out = {}
for strategy_name in ("one_device", "mirrored"):
    strategy = make_strategy(strategy_name)
    sizes = {}
    for examples in (20, 5):
        cfg = load_config(path, [f"train.strategy={strategy_name}",
                                 f"ssl.knn_train_examples={examples}"])  # global batch 8
        bank = evaluate_model(encoder, strategy, knn.labeled_subset_fn(cfg),
                              knn.EmbeddingCollector())
        sizes[examples] = [len(bank["embeddings"]), len(bank["labels"])]
    out[strategy_name] = {"replicas": strategy.num_replicas_in_sync, "sizes": sizes}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_labeled_subset_holds_the_configured_examples_on_two_replicas():
    # The subset used to take ceil(examples / global batch) per-replica batches: under R replicas
    # fed by one input pipeline that is 1/R of the examples (and whole global batches on one).
    result = run_on_two_cpus(LABELED_SUBSET_SCRIPT, timeout=300)
    assert result["one_device"]["replicas"] == 1 and result["mirrored"]["replicas"] == 2
    for name, r in result.items():
        assert r["sizes"] == {"20": [20, 20], "5": [5, 5]}, (name, r)
