"""Self-supervised losses: SimCLR's NT-Xent with cross-replica negatives, BYOL's regression loss.

Scaling convention (the same as `tf.nn.compute_average_loss` and the supervised loop): a loss
returned here inside a replica of a tf.distribute strategy is that replica's SHARE of the loss on
the global batch, i.e. `sum(local per-anchor losses) / global number of anchors`. Summing it over
replicas (what gradient all-reduce does) gives exactly the loss, and the gradient, of one replica
on the concatenated global batch. With no strategy (or one replica) it is the plain mean.

NT-Xent gathers the embeddings of every replica (`ReplicaContext.all_gather`, whose gradient is
an all-reduce of the upstream gradients), so each anchor sees `2B - 2` negatives for a global
batch of B images, not just its own replica's (keras-cv's `SimCLRLoss` does the latter).

Example (inside `strategy.run`):
    z1, z2 = projector(encoder(view1)), projector(encoder(view2))      # [b, 128] each
    loss = nt_xent_loss(z1, z2, temperature=0.1)                        # this replica's share
    p1, p2 = predictor(online(view1)), predictor(online(view2))         # BYOL
    loss = byol_loss(p1, p2, target(view1), target(view2))
"""

from __future__ import annotations

import tensorflow as tf

# Added to the logit of an anchor with itself so it drops out of the softmax. Finite (not -inf)
# so a row never holds inf - inf; exp(-1e9) underflows to exactly 0 in float32.
_MASK_LOGIT = -1e9


def _replica_context() -> tf.distribute.ReplicaContext | None:
    """The current replica context when there is more than one replica, else None.

    Raises ValueError in a cross-replica context of a multi-replica strategy: the loss would see
    one replica's batch only, silently (call it inside `strategy.run`)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError(
                "cross-replica losses must be computed inside strategy.run (replica context)"
            )
        return None
    return context if context.num_replicas_in_sync > 1 else None


def gather_replicas(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """All replicas' rows of `x` and where this replica's rows start among them.

    Args:
      x: `[b, ...]` this replica's rows (b may differ between replicas).
    Returns:
      (`[B, ...]` every replica's rows in replica-id order, int32 scalar offset of this replica's
      first row). Without a strategy or with one replica: `(x, 0)`. Differentiable: the gradient
      of a gathered row flows back to the replica that owns it.
    """
    context = _replica_context()
    if context is None:
        return x, tf.constant(0, tf.int32)
    gathered = context.all_gather(x, axis=0)
    # Per-replica sizes rather than replica_id * b: robust to unequal last batches.
    sizes = context.all_gather(tf.shape(x)[:1], axis=0)
    return gathered, tf.reduce_sum(sizes[: context.replica_id_in_sync_group])


def nt_xent_per_example(z1: tf.Tensor, z2: tf.Tensor, temperature: float = 0.1) -> tf.Tensor:
    """NT-Xent per local image: the SUM of its two anchors' cross-entropies (float32 `[b]`).

    Anchor `z1[i]` has positive `z2[i]`; its negatives are every other embedding of BOTH views on
    EVERY replica (2B - 2 of them); anchor `z2[i]` likewise. Embeddings are L2-normalised here
    and similarities divided by `temperature`. The mean of the result over the global batch is
    the loss of SimCLR's code (tf2/objective.py: `reduce_mean(loss_a + loss_b)`), twice the
    paper's `1/(2B) sum_k l(k)` over the 2B anchors: its learning rate (0.3 x B/256 with LARS)
    and weight decay were tuned on this scale, so halving it would halve the effective decay
    and, under LARS, change the trust ratio's balance of gradient against decay.

    Args:
      z1, z2: `[b, d]` projections of view 1 and view 2 of the same b images (any float dtype;
        the loss is computed in float32).
      temperature: tau > 0 (SimCLR: 0.1 at large batch, up to 0.5 at small ones).
    """
    z1 = tf.math.l2_normalize(tf.cast(z1, tf.float32), axis=-1)
    z2 = tf.math.l2_normalize(tf.cast(z2, tf.float32), axis=-1)
    all_z1, offset = gather_replicas(z1)
    all_z2, _ = gather_replicas(z2)
    b = tf.shape(z1)[0]
    big_b = tf.shape(all_z1)[0]
    rows = offset + tf.range(b)  # global index of each local image
    self_mask = tf.one_hot(rows, big_b, on_value=_MASK_LOGIT, off_value=0.0)
    inv_t = 1.0 / temperature

    def anchor_loss(anchors, same_view, other_view):
        # Columns: the other view (positive at `rows`) then the same view (self masked out).
        positives_and_cross = tf.matmul(anchors, other_view, transpose_b=True) * inv_t
        same = tf.matmul(anchors, same_view, transpose_b=True) * inv_t + self_mask
        logits = tf.concat([positives_and_cross, same], axis=1)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(rows, logits)

    return anchor_loss(z1, all_z1, all_z2) + anchor_loss(z2, all_z2, all_z1)


def nt_xent_loss(z1: tf.Tensor, z2: tf.Tensor, temperature: float = 0.1) -> tf.Tensor:
    """This replica's share of the global-batch NT-Xent loss (float32 scalar).

    `sum(nt_xent_per_example) / global batch size`: summed over replicas it is SimCLR's loss on
    the global batch (its code's scale, see `nt_xent_per_example`; the module doc for replicas).
    Shapes as `nt_xent_per_example`.
    """
    # compute_average_loss divides by per-replica batch x num_replicas_in_sync: the global batch.
    return tf.nn.compute_average_loss(nt_xent_per_example(z1, z2, temperature))


def contrastive_accuracy(z1: tf.Tensor, z2: tf.Tensor) -> tf.Tensor:
    """Fraction (float32 scalar, this replica's anchors) of `z1` rows whose most similar row
    among all replicas' `z2` is their own positive: a label-free sign that training works."""
    z1 = tf.math.l2_normalize(tf.cast(z1, tf.float32), axis=-1)
    all_z2, offset = gather_replicas(tf.math.l2_normalize(tf.cast(z2, tf.float32), axis=-1))
    best = tf.argmax(tf.matmul(z1, all_z2, transpose_b=True), axis=1, output_type=tf.int32)
    rows = offset + tf.range(tf.shape(z1)[0])
    return tf.reduce_mean(tf.cast(tf.equal(best, rows), tf.float32))


def normalized_regression(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """BYOL's loss per example: `||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t)`, float32 `[b]` in [0, 4].

    The target gets no gradient (`tf.stop_gradient`): in BYOL it is the EMA network's output.

    Args:
      predictions: `[b, d]` online predictor outputs; targets: `[b, d]` target projections.
    """
    p = tf.math.l2_normalize(tf.cast(predictions, tf.float32), axis=-1)
    t = tf.math.l2_normalize(tf.stop_gradient(tf.cast(targets, tf.float32)), axis=-1)
    return 2.0 - 2.0 * tf.reduce_sum(p * t, axis=-1)


def byol_loss(p1: tf.Tensor, p2: tf.Tensor, t1: tf.Tensor, t2: tf.Tensor) -> tf.Tensor:
    """This replica's share of BYOL's symmetrised loss (float32 scalar, module-doc convention).

    Per image: `normalized_regression(p1, t2) + normalized_regression(p2, t1)` (each view's
    prediction regresses the OTHER view's target projection), in [0, 8]; averaged over the
    global batch. No negatives: nothing is gathered across replicas.

    Args:
      p1, p2: `[b, d]` online predictions of views 1 and 2; t1, t2: `[b, d]` target projections.
    """
    per_example = normalized_regression(p1, t2) + normalized_regression(p2, t1)
    return tf.nn.compute_average_loss(per_example)


def embedding_std(z: tf.Tensor) -> tf.Tensor:
    """Mean over dimensions of the per-dimension std of the L2-normalised embeddings `[b, d]`.

    A collapse detector (SimSiam's): ~`1/sqrt(d)` for well-spread embeddings, 0 when every image
    maps to the same point. Local batch only (a monitoring value; float32 scalar).
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
