"""Self-supervised methods as Trainer objectives (`training.objectives`): SimCLR and BYOL.

A method is views -> loss -> which variables train. Its encoder is the classifier's own backbone
(the `head_pool` output of `models.resnet.build_classifier`'s model, sharing its layers), so the
run's checkpoint keeps `model` = the classifier, which `transfer.restore` reads unchanged; the
method's extra state sits beside it under `ssl_*` names (`checkpoint_objects`) and is dropped by
fine-tuning. The classifier's `head_dense` does not train (it has no loss here).

Batches are the input pipeline's two-view mode: `((view1, view2) uint8 [b, S, S, 3] each,
labels float32 [b, 0])`. Batch-norm statistics follow each method's code: SimCLR runs both views
as one `[2b, ...]` batch (statistics over both views; its model concatenates them), BYOL runs
each view through the online and target networks on its own (statistics per view; its
byol_experiment.py applies the network once per view), so a view's BYOL embedding never depends
on the other view in the step.

  SimCLR (v2 head): z = projection(encoder(x)); NT-Xent with temperature over every replica's
    embeddings (`ssl.losses.nt_xent_loss`). Metrics: embedding_std (collapse detector),
    contrastive_accuracy (positive is the nearest of all 2B - 1 candidates).
  BYOL: online p = predictor(projection(encoder(x))), target t = target_projection(
    target_encoder(x)), each view on its own; each view's prediction regresses the other view's
    target; after every optimizer step the target moves towards the online weights with the
    cosine momentum (`ssl.momentum`). The target is never trained (not in `trainable_variables`,
    no optimizer slots); its BN runs in training mode (batch statistics), as BYOL's. Metrics:
    embedding_std, target_momentum (tau of the last update).

Adding a method (MoCo v3, DINO) = one class with the same attributes here.

Example (under strategy.scope(), after the model is built):
    objective = make_objective(cfg, model, total_steps)
    trainer = start_run(..., extra_checkpoint_objects=objective.checkpoint_objects,
                        extra_variables=objective.head_variables)
    if trainer.restore() == 0:
        objective.start(strategy)                 # BYOL: target := online
    trainer.train(train_fn, ..., objective=objective,
                  trainable_variables=objective.trainable_variables)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.models.resnet import build_classifier
from transfer_tf.ssl import heads, losses
from transfer_tf.ssl.momentum import MomentumUpdater, paired_weights
from transfer_tf.ssl.settings import CHECKPOINT_OBJECTS

SIMCLR_PROJECTION = (2048, 2048, 128)
BYOL_PROJECTION = (4096, 256)


def pooled_encoder(model: keras.Model) -> keras.Model:
    """The classifier's backbone as a model sharing its layers: images uint8 `[B, S, S, 3]` ->
    pooled features `[B, C]` (compute dtype; C = 2048 for ResNet-50, 512 for 10/18/34)."""
    pool = model.get_layer("head_pool")
    return keras.Model(model.input, pool.output, name=f"{model.name}_encoder")


def _two_views(batch) -> tf.Tensor:
    """`((v1, v2), labels)` -> `[2b, S, S, 3]` (labels ignored): SimCLR's one batch of both."""
    (view1, view2), _ = batch
    return tf.concat([view1, view2], axis=0)


class SimCLR:
    """SimCLR v2's objective on `model`'s backbone (see module doc).

    Args:
      model: the run's classifier (built under the strategy scope, like this object).
      projection_widths: the projection MLP (SimCLR v2: 2048-2048-128).
      temperature: NT-Xent tau.
    """

    metric_names = ("embedding_std", "contrastive_accuracy")

    def __init__(
        self,
        model: keras.Model,
        *,
        projection_widths=SIMCLR_PROJECTION,
        temperature: float = 0.1,
    ):
        self.encoder = pooled_encoder(model)
        dim = int(self.encoder.output.shape[-1])
        self.projection = heads.projection_head(dim, projection_widths, name="ssl_projection")
        self.temperature = float(temperature)
        self.checkpoint_objects = dict(
            zip(CHECKPOINT_OBJECTS["simclr"], [self.projection], strict=True)
        )

    @property
    def head_variables(self) -> list:
        """Trainable variables besides the classifier's (the optimizer must cover them)."""
        return list(self.projection.trainable_variables)

    @property
    def trainable_variables(self) -> list:
        """What an optimizer step updates: the backbone and the heads (not `head_dense`)."""
        return list(self.encoder.trainable_variables) + self.head_variables

    def start(self, strategy: tf.distribute.Strategy) -> None:
        """Called once at a run's step 0 (not on resume): nothing to initialise."""
        del strategy

    def replica_loss(self, batch) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        z = self.projection(self.encoder(_two_views(batch), training=True), training=True)
        z1, z2 = tf.split(z, 2, axis=0)
        loss = losses.nt_xent_loss(z1, z2, self.temperature)
        return loss, {
            "embedding_std": losses.embedding_std(z1),
            "contrastive_accuracy": losses.contrastive_accuracy(z1, z2),
        }

    @tf.autograph.experimental.do_not_convert  # called inside train_steps' AutoGraph loop
    def after_step(self, strategy: tf.distribute.Strategy, step: tf.Tensor) -> None:
        del strategy, step


class BYOL:
    """BYOL's objective on `model`'s backbone, `target_model` (same architecture) as the target.

    Args:
      model, target_model: two classifiers of the same config (under the strategy scope).
      total_steps: the run's length K (the momentum reaches 1 there).
      projection_widths / predictor_widths: the MLPs (BYOL: 4096-256 each).
      momentum_base: tau_base (0.996; 0.99 for short runs).
    """

    metric_names = ("embedding_std", "target_momentum")

    def __init__(
        self,
        model: keras.Model,
        target_model: keras.Model,
        *,
        total_steps: int,
        projection_widths=BYOL_PROJECTION,
        predictor_widths=BYOL_PROJECTION,
        momentum_base: float = 0.996,
    ):
        self.encoder = pooled_encoder(model)
        self.target_encoder = pooled_encoder(target_model)
        dim = int(self.encoder.output.shape[-1])

        def mlp(input_dim, widths, name):
            return heads.mlp_head(
                input_dim, widths, name=name, last_batchnorm=False, last_bias=True
            )

        self.projection = mlp(dim, projection_widths, "ssl_projection")
        self.target_projection = mlp(dim, projection_widths, "ssl_target_projection")
        self.predictor = mlp(projection_widths[-1], predictor_widths, "ssl_predictor")
        self.updater = MomentumUpdater(
            self.encoder, self.target_encoder, total_steps, base=momentum_base
        )
        self.updater.pairs += paired_weights(self.projection, self.target_projection)
        # tau of the last update: a metric only (tau is a function of the checkpointed step).
        self.momentum = tf.Variable(
            0.0,
            trainable=False,
            name="ssl_target_momentum",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        objects = [self.projection, self.predictor, self.target_encoder, self.target_projection]
        self.checkpoint_objects = dict(zip(CHECKPOINT_OBJECTS["byol"], objects, strict=True))

    @property
    def head_variables(self) -> list:
        """Trainable variables besides the classifier's: projection and predictor (the target
        network is never trained)."""
        return list(self.projection.trainable_variables) + list(self.predictor.trainable_variables)

    @property
    def trainable_variables(self) -> list:
        """What an optimizer step updates: the online backbone and heads."""
        return list(self.encoder.trainable_variables) + self.head_variables

    def start(self, strategy: tf.distribute.Strategy) -> None:
        """At a run's step 0 (after any warm start): the target starts as a copy of the online
        network (BYOL). A resumed run restores its target from the checkpoint instead."""
        self.updater.copy_online_to_target(strategy)

    def _online(self, view: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(projection z, prediction p) `[b, d]` of one view's uint8 `[b, S, S, 3]` batch."""
        z = self.projection(self.encoder(view, training=True), training=True)
        return z, self.predictor(z, training=True)

    def _target(self, view: tf.Tensor) -> tf.Tensor:
        """The target projection `[b, d]` of one view, without gradient: only the target's BN
        statistics move here; its weights move in after_step."""
        t = self.target_projection(self.target_encoder(view, training=True), training=True)
        return tf.stop_gradient(t)

    def replica_loss(self, batch) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        (view1, view2), _ = batch
        # One call per view, as BYOL's code: BN statistics of a view's own batch (two calls also
        # update the moving statistics twice, as its sequential state updates do).
        z1, p1 = self._online(view1)
        _, p2 = self._online(view2)
        t1, t2 = self._target(view1), self._target(view2)
        loss = losses.byol_loss(p1, p2, t1, t2)
        return loss, {
            "embedding_std": losses.embedding_std(z1),
            "target_momentum": tf.identity(self.momentum),
        }

    @tf.autograph.experimental.do_not_convert  # called inside train_steps' AutoGraph loop
    def after_step(self, strategy: tf.distribute.Strategy, step: tf.Tensor) -> None:
        """Cross-replica context, after the optimizer step for global step `step`."""
        self.momentum.assign(self.updater.update(strategy, step))


Method = SimCLR | BYOL


def make_objective(cfg: ExperimentConfig, model: keras.Model, total_steps: int) -> Method:
    """The `ssl.method` objective of `cfg` on `model` (call under the strategy scope, after the
    precision policy is set: BYOL builds its target classifier here)."""
    s = cfg.ssl
    if s.method == "simclr":
        return SimCLR(
            model,
            projection_widths=tuple(s.projection_widths) or SIMCLR_PROJECTION,
            temperature=s.temperature,
        )
    if s.method == "byol":
        target = build_classifier(cfg.model, cfg.data.num_classes)
        return BYOL(
            model,
            target,
            total_steps=total_steps,
            projection_widths=tuple(s.projection_widths) or BYOL_PROJECTION,
            predictor_widths=tuple(s.predictor_widths),
            momentum_base=s.momentum_base,
        )
    raise ValueError(f"ssl.method {s.method!r} is not a self-supervised method")
