"""Weighted k-nearest-neighbour classification of embeddings: a label-free run's progress metric.

InstDisc / DINO's protocol: L2-normalise every embedding; for each eval embedding take the k
train embeddings of highest cosine similarity s_j; class c scores `sum_j exp(s_j / T) [y_j = c]`;
predict the best class. k = 20, T = 0.07 as in those papers.

Batched so that memory is `O(eval_chunk x (train_chunk + k))`, never `M x N`: eval rows go in
chunks, and within a chunk the train set is scanned in chunks keeping a running top-k (merging
the previous top-k with each chunk's top-k gives the top-k of the union).

Example:
    top1 = knn_top1(train_emb, train_labels, eval_emb, eval_labels, num_classes=1000)
    # In a run: embeddings of the backbone's pooled features, one pass per split.
    encoder = keras.Model(model.input, model.get_layer("head_pool").output)
    metrics = knn_eval(encoder, strategy, labeled_train_fn, eval_fn, num_classes=1000)
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.data.dataset_fn import dataset_fn
from transfer_tf.errors import UsageError
from transfer_tf.training.evaluation import DatasetFn, evaluate_model

ArrayLike = np.ndarray | tf.Tensor


def _class_indices(labels: ArrayLike) -> tf.Tensor:
    """int32 `[N]` from class indices `[N]` or one-hot / multi-hot rows `[N, C]` (argmax)."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2:
        return tf.argmax(labels, axis=1, output_type=tf.int32)
    return tf.cast(labels, tf.int32)


@tf.function(reduce_retracing=True)
def _top_k_neighbours(
    queries: tf.Tensor, train: tf.Tensor, k: int, train_chunk: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """(similarities float32 [m, k], train indices int32 [m, k]) of the k nearest train rows."""
    m = tf.shape(queries)[0]
    n = tf.shape(train)[0]
    best_sim = tf.fill([m, k], tf.constant(-np.inf, tf.float32))
    best_idx = tf.zeros([m, k], tf.int32)
    for start in tf.range(0, n, train_chunk):
        chunk = train[start : start + train_chunk]
        sims = tf.matmul(queries, chunk, transpose_b=True)  # [m, <= train_chunk]
        local_k = tf.minimum(k, tf.shape(chunk)[0])
        sim, idx = tf.math.top_k(sims, k=local_k)
        merged_sim = tf.concat([best_sim, sim], axis=1)
        merged_idx = tf.concat([best_idx, idx + start], axis=1)
        best_sim, keep = tf.math.top_k(merged_sim, k=k)
        best_idx = tf.gather(merged_idx, keep, batch_dims=1)
    return best_sim, best_idx


def knn_predict(
    train_embeddings: ArrayLike,
    train_labels: ArrayLike,
    eval_embeddings: ArrayLike,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    eval_chunk: int = 256,
    train_chunk: int = 8192,
) -> tf.Tensor:
    """Predicted class (int32 `[M]`) of each eval embedding by temperature-weighted kNN votes.

    Args:
      train_embeddings: `[N, d]` float (any float dtype; cast to float32, L2-normalised here).
      train_labels: int `[N]` class indices, or `[N, C]` one-hot rows (argmax is taken).
      eval_embeddings: `[M, d]` float.
      num_classes: C.
      k: neighbours (clipped to N); temperature: T of the `exp(s / T)` vote weights.
      eval_chunk, train_chunk: rows per block; peak memory ~ `eval_chunk * (train_chunk + 2k)`.
    """
    train = tf.math.l2_normalize(tf.cast(train_embeddings, tf.float32), axis=1)
    queries = tf.math.l2_normalize(tf.cast(eval_embeddings, tf.float32), axis=1)
    labels = _class_indices(train_labels)
    n = int(train.shape[0])
    if n == 0:
        raise ValueError("knn_predict needs at least one train embedding")
    k = min(k, n)
    predictions = []
    for start in range(0, int(queries.shape[0]), eval_chunk):
        sims, idx = _top_k_neighbours(queries[start : start + eval_chunk], train, k, train_chunk)
        # exp((s - 1) / T): the same argmax as exp(s / T), and never overflows (s <= 1).
        weights = tf.exp((sims - 1.0) / temperature)
        votes = tf.one_hot(tf.gather(labels, idx), num_classes) * weights[..., None]
        predictions.append(tf.argmax(tf.reduce_sum(votes, axis=1), axis=1, output_type=tf.int32))
    if not predictions:
        return tf.zeros([0], tf.int32)
    return tf.concat(predictions, axis=0)


def knn_top1(
    train_embeddings: ArrayLike,
    train_labels: ArrayLike,
    eval_embeddings: ArrayLike,
    eval_labels: ArrayLike,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    eval_chunk: int = 256,
    train_chunk: int = 8192,
) -> float:
    """kNN top-1 accuracy (python float in [0, 1]) of `eval_embeddings` against `eval_labels`
    (int `[M]` or one-hot `[M, C]`); the other arguments as `knn_predict`."""
    predicted = knn_predict(
        train_embeddings,
        train_labels,
        eval_embeddings,
        num_classes,
        k=k,
        temperature=temperature,
        eval_chunk=eval_chunk,
        train_chunk=train_chunk,
    )
    truth = _class_indices(eval_labels)
    if truth.shape[0] == 0:
        return 0.0
    return float(tf.reduce_mean(tf.cast(tf.equal(predicted, truth), tf.float32)))


class EmbeddingCollector:
    """An `evaluate_model` accumulator that keeps every batch: `update(labels [B, C], outputs
    [B, d])`; `result()` -> {"labels": float32 [N, C], "embeddings": float32 [N, d]}."""

    def __init__(self):
        self._labels: list[np.ndarray] = []
        self._embeddings: list[np.ndarray] = []

    def update(self, labels: np.ndarray, outputs: np.ndarray) -> None:
        self._labels.append(np.asarray(labels, np.float32))
        self._embeddings.append(np.asarray(outputs, np.float32).reshape(len(outputs), -1))

    def result(self) -> dict[str, np.ndarray]:
        if not self._embeddings:
            raise ValueError("EmbeddingCollector: the dataset was empty")
        return {
            "labels": np.concatenate(self._labels),
            "embeddings": np.concatenate(self._embeddings),
        }


def knn_eval(
    encoder: keras.Model,
    strategy: tf.distribute.Strategy,
    train_dataset_fn: DatasetFn,
    eval_dataset_fn: DatasetFn,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """kNN top-1 of `encoder`'s embeddings: one `evaluate_model` pass over a labeled train subset
    and one over the eval split (eval-mode datasets of `(images, labels [B, C])`); returns
    `{"knn_top1": float}`. Memory: both splits' embeddings on the host (N x d float32)."""
    train = evaluate_model(encoder, strategy, train_dataset_fn, EmbeddingCollector())
    evals = evaluate_model(encoder, strategy, eval_dataset_fn, EmbeddingCollector())
    top1 = knn_top1(
        train["embeddings"],
        train["labels"],
        evals["embeddings"],
        evals["labels"],
        num_classes,
        k=k,
        temperature=temperature,
    )
    return {"knn_top1": top1}


def labeled_subset_fn(cfg: ExperimentConfig) -> DatasetFn:
    """The kNN monitor's labeled train subset: eval-preprocessed (centre crop, fixed order) batches
    of `ssl.knn_train_pattern` (default `data.train_pattern`), the first `ssl.knn_train_examples`
    records (at least one) over all replicas, batched per replica as `dataset_fn`.

    Counted in examples, not batches: one input pipeline feeds all the replicas of a worker, so
    a count of global batches taken from a per-replica-batched pipeline gave 1/R of them under
    R replicas. Each of the N input pipelines (they read disjoint records) takes its share of
    the examples, the first `examples mod N` pipelines one more.
    """
    pattern = cfg.ssl.knn_train_pattern or cfg.data.train_pattern
    subset = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_pattern=pattern))
    examples = max(1, cfg.ssl.knn_train_examples)
    base = dataset_fn(subset, "eval")

    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        pipelines, index = ctx.num_input_pipelines, ctx.input_pipeline_id
        share = examples // pipelines + (1 if index < examples % pipelines else 0)
        per_replica = ctx.get_per_replica_batch_size(cfg.train.global_batch_size)
        return base(ctx).unbatch().take(share).batch(per_replica)

    return fn


def knn_monitor(cfg: ExperimentConfig, encoder: keras.Model, strategy: tf.distribute.Strategy):
    """`step -> {"knn_top1": float}`: `knn_eval` of `encoder` with `ssl.knn_k` /
    `ssl.knn_temperature`, the labeled subset of `labeled_subset_fn` against `data.eval_pattern`
    (a run's eval_fn every `train.eval_every_epochs`)."""
    train_fn, eval_fn = labeled_subset_fn(cfg), dataset_fn(cfg, "eval")

    def evaluate(step: int) -> dict[str, float]:
        del step
        return knn_eval(
            encoder,
            strategy,
            train_fn,
            eval_fn,
            cfg.data.num_classes,
            k=cfg.ssl.knn_k,
            temperature=cfg.ssl.knn_temperature,
        )

    return evaluate


def evaluate_run(model_dir: str, checkpoint: str | None = None, eval_pattern: str = "") -> dict:
    """A self-supervised run's eval (what `pipelines/evaluate.py` reports for it): kNN top-1 of
    the checkpoint's pooled backbone features on the eval split (`eval_pattern`, default the
    run's `data.eval_pattern`) against the run's labeled train subset (`labeled_subset_fn`).

    k and T are the run's `ssl.knn_k` / `ssl.knn_temperature`; a run that switched the monitor
    off (`knn_k: 0`) is evaluated with the schema's k = 20. Its classifier head is untrained, so
    there is no top-1 of it. Returns `{"knn_top1", "knn_k", "checkpoint"}`.
    """
    from transfer_tf.config_schema import SSLConfig
    from transfer_tf.ssl.methods import pooled_encoder
    from transfer_tf.ssl.settings import is_self_supervised
    from transfer_tf.training import checkpoints

    model, cfg, prefix = checkpoints.load_model_checkpoint(model_dir, checkpoint)
    if not is_self_supervised(cfg):
        raise UsageError(f"'{model_dir}' is a supervised run: it has no kNN eval (ssl.method)")
    if eval_pattern:
        cfg.data.eval_pattern = eval_pattern
    if not cfg.data.eval_pattern:
        raise UsageError(
            f"'{model_dir}': no eval split (data.eval_pattern is empty; pass --eval_pattern)"
        )
    k = cfg.ssl.knn_k or SSLConfig().knn_k
    metrics = knn_eval(
        pooled_encoder(model),
        tf.distribute.get_strategy(),
        labeled_subset_fn(cfg),
        dataset_fn(cfg, "eval"),
        cfg.data.num_classes,
        k=k,
        temperature=cfg.ssl.knn_temperature,
    )
    metrics["knn_k"] = k
    metrics["checkpoint"] = prefix  # the one restored (a damaged newest one is skipped)
    return metrics
