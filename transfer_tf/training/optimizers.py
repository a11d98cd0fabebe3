"""Optimizers: SGD (momentum), LARS and AdamW as Keras optimizers, with weight decay on kernels only.

For SGD the weight decay is an L2 term added to the loss by the loop (Model Garden convention:
`0.5 * wd * sum(kernel**2)`, i.e. gradient `wd * kernel`); LARS and AdamW apply it inside the
optimizer (decoupled), so `loss_weight_decay()` tells the loop which case applies.

Example:
    opt = make_optimizer(cfg.train)            # under strategy.scope()
"""

from __future__ import annotations

import keras
import tensorflow as tf

from transfer_tf.config import TrainConfig


def _decayed(variable) -> bool:
    # update_step sees the backend tf.Variable ("kernel:0"), elsewhere a keras.Variable (path).
    name = getattr(variable, "path", None) or variable.name
    return name.split(":")[0].endswith("kernel")


class LARS(keras.optimizers.SGD):
    """SGD momentum with layer-wise adaptive rate scaling (You et al. 2017) for kernels.

    For a kernel `w` with (all-reduced) gradient `g`: `g' = g + wd * w`, trust
    `eta * ||w|| / ||g'||` (1 when either norm is 0), and the momentum update uses `trust * g'`.
    BN parameters and biases get plain momentum SGD without decay.
    """

    def __init__(self, *, weight_decay_rate: float = 0.0, eta: float = 0.001, **kwargs):
        super().__init__(**kwargs)
        self.weight_decay_rate = weight_decay_rate
        self.eta = eta

    def update_step(self, gradient, variable, learning_rate):
        if _decayed(variable):
            w = tf.cast(variable, gradient.dtype)
            gradient = gradient + self.weight_decay_rate * w
            w_norm = tf.norm(w)
            g_norm = tf.norm(gradient)
            trust = tf.where((w_norm > 0) & (g_norm > 0), self.eta * w_norm / (g_norm + 1e-12), 1.0)
            gradient = gradient * trust
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {
            **super().get_config(),
            "weight_decay_rate": self.weight_decay_rate,
            "eta": self.eta,
        }


def loss_weight_decay(optimizer_name: str, weight_decay: float) -> float:
    """The L2 coefficient the loop adds to the loss (0 when the optimizer decays itself)."""
    return weight_decay if optimizer_name == "sgd" else 0.0


def make_optimizer(
    train_cfg: TrainConfig,
    *,
    optimizer: str | None = None,
    weight_decay: float | None = None,
) -> keras.optimizers.Optimizer:
    """Builds the optimizer (call under `strategy.scope()`).

    The learning rate is a placeholder: the loop drives it from the global step. Weight EMA uses
    Keras' built-in `use_ema` when `train.ema_decay > 0`. With `mixed_precision=float16` the result
    is a `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling).
    """
    name = optimizer or train_cfg.optimizer
    wd = train_cfg.weight_decay if weight_decay is None else weight_decay
    ema = {"use_ema": True, "ema_momentum": train_cfg.ema_decay} if train_cfg.ema_decay > 0 else {}
    if name == "sgd":
        opt = keras.optimizers.SGD(
            0.0, momentum=train_cfg.momentum, nesterov=train_cfg.nesterov, **ema
        )
    elif name == "lars":
        opt = LARS(
            learning_rate=0.0,
            momentum=train_cfg.momentum,
            nesterov=train_cfg.nesterov,
            weight_decay_rate=wd,
            **ema,
        )
    else:
        opt = keras.optimizers.AdamW(0.0, weight_decay=wd, **ema)
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if train_cfg.mixed_precision == "float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
