"""Optimizers: SGD (momentum), LARS, Adam and AdamW as Keras optimizers with per-phase state.

Weight decay applies to conv/dense kernels only, decided once per variable by
`models.resnet.is_decayed` (the one predicate; the loop's L2 term uses it too) and keyed on the
variable itself, so every replica copy of a kernel under a tf.distribute strategy is treated alike:
- `sgd`, `adam`: an L2 term in the loss, added by the loop (`0.5 * wd * sum(kernel**2)`, gradient
  `wd * kernel`; Model Garden's SGD convention and the classic Adam one). `loss_weight_decay()`
  says which case applies.
- `lars`: `g + wd * w` inside the layer-wise trust ratio (You et al. 2017).
- `adamw`: decoupled, `w -= lr * wd * w` each step (Loshchilov & Hutter; PyTorch/Keras convention:
  multiplied by the learning rate, so useful values are ~0.01-0.1, not SGD's 1e-4).
`weight_decay: -1` (the default of `train.weight_decay` and `transfer.weight_decay`) picks the
optimizer's own default (`DEFAULT_WEIGHT_DECAY`): 1e-4 for sgd/lars, 0 for adam,
0.05 for adamw. An adamw value in (0, 1e-3) is a config error: it would be no decay at all.

Phase-aware state (what the training loop uses; `PhaseAware`):
- `reset_state()`: slots (momentum, Adam's first/second moments) to zero and the iteration count to
  0, so a phase starts like a fresh optimizer: a layer unfrozen in phase 2 gets a fresh Adam's bias
  correction, not that of the step count phase 1 left behind.
- `set_lr_multipliers([(variable, factor)])`: per-variable factors on the LEARNING RATE (the whole
  update, decoupled decay included). Scaling the gradient instead is a no-op under Adam, which
  normalises it away.

Example:
    opt = make_optimizer(cfg.train)            # under strategy.scope()
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from transfer_tf.config import TrainConfig
from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import is_decayed

# `weight_decay: -1` resolves to these (training/optimizers.py says how each optimizer applies it).
# AdamW's is decoupled and multiplied by the LR each step, hence ~100x SGD's L2 coefficient.
DEFAULT_WEIGHT_DECAY: dict[str, float] = {"sgd": 1e-4, "lars": 1e-4, "adam": 0.0, "adamw": 0.05}


class _PhaseState:
    """Per-optimizer bookkeeping kept out of the checkpoint graph (a plain object is not
    tracked): the slot variables created by `build`, decayed variable keys, LR factors."""

    def __init__(self):
        self.slots: list = []
        self.decayed: set = set()
        self.lr_factors: dict = {}


class PhaseAware:
    """Mixin for Keras optimizers: kernel-only decay keyed on the variable, LR multipliers,
    `reset_state()`. Subclasses set `decoupled_weight_decay` (0 = none)."""

    decoupled_weight_decay: float = 0.0

    def build(self, variables):
        before = {id(v) for v in self.variables}
        super().build(variables)
        state = _PhaseState()
        state.slots = [v for v in self.variables if id(v) not in before]
        state.decayed = {self._var_key(v) for v in variables if is_decayed(v)}
        self._phase = state

    def uses_decay(self, variable) -> bool:
        """Whether `variable` (a model variable or any replica copy of one) is decayed."""
        return self._var_key(variable) in self._phase.decayed

    def set_lr_multipliers(self, multipliers) -> None:
        """`(variable, factor)` pairs on the learning rate; replaces the previous ones. Takes
        effect in steps traced afterwards (the loop traces a new step per `train` call)."""
        self._phase.lr_factors = {
            self._var_key(v): float(f) for v, f in multipliers if float(f) != 1.0
        }

    def reset_state(self) -> None:
        """A fresh optimizer: slots to zero, iteration count to 0 (call in cross-replica context;
        the learning rate variable is left alone, the loop sets it every step)."""
        self.iterations.assign(0)  # a variable: these optimizers never accumulate gradients
        for slot in self._phase.slots:
            slot.assign(tf.zeros(slot.shape, slot.dtype))

    def _decay_and_lr(self, variable, learning_rate):
        factor = self._phase.lr_factors.get(self._var_key(variable), 1.0)
        if factor != 1.0:
            learning_rate = learning_rate * factor
        if self.decoupled_weight_decay > 0 and self.uses_decay(variable):
            lr = tf.cast(learning_rate, variable.dtype)
            self.assign_sub(variable, variable * (self.decoupled_weight_decay * lr))
        return learning_rate

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._decay_and_lr(variable, learning_rate)
        return super().update_step(gradient, variable, learning_rate)


class SGD(PhaseAware, keras.optimizers.SGD):
    """Keras SGD (momentum, optional Nesterov); weight decay is the loop's L2 term."""


class Adam(PhaseAware, keras.optimizers.Adam):
    """Keras Adam; weight decay is the loop's L2 term (classic Adam)."""


class AdamW(PhaseAware, keras.optimizers.Adam):
    """Adam with decoupled weight decay on kernels: `w -= lr * weight_decay_rate * w` per step."""

    def __init__(self, *, weight_decay_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.decoupled_weight_decay = float(weight_decay_rate)

    def get_config(self):
        return {**super().get_config(), "weight_decay_rate": self.decoupled_weight_decay}


class LARS(PhaseAware, keras.optimizers.SGD):
    """SGD momentum with layer-wise adaptive rate scaling (You et al. 2017) for kernels.

    For a kernel `w` with (all-reduced) gradient `g`: `g' = g + wd * w`, trust
    `eta * ||w|| / ||g'||` (1 when either norm is 0), and the momentum update uses `trust * g'`.
    BN parameters and biases get plain momentum SGD without decay. "Kernel" is decided per
    variable at build time, so replica copies (`.../replica_1:0`) are kernels too.
    """

    def __init__(self, *, weight_decay_rate: float = 0.0, eta: float = 0.001, **kwargs):
        super().__init__(**kwargs)
        self.weight_decay_rate = weight_decay_rate
        self.eta = eta

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._decay_and_lr(variable, learning_rate)
        if self.uses_decay(variable):
            w = tf.cast(variable, gradient.dtype)
            gradient = gradient + self.weight_decay_rate * w
            w_norm = tf.norm(w)
            g_norm = tf.norm(gradient)
            trust = tf.where((w_norm > 0) & (g_norm > 0), self.eta * w_norm / (g_norm + 1e-12), 1.0)
            gradient = gradient * trust
        return keras.optimizers.SGD.update_step(self, gradient, variable, learning_rate)

    def get_config(self):
        return {
            **super().get_config(),
            "weight_decay_rate": self.weight_decay_rate,
            "eta": self.eta,
        }


def resolve_weight_decay(optimizer_name: str, weight_decay: float) -> float:
    """The weight decay in effect: `weight_decay`, or the optimizer's default when it is -1
    (any negative value)."""
    return DEFAULT_WEIGHT_DECAY[optimizer_name] if weight_decay < 0 else float(weight_decay)


def loss_weight_decay(optimizer_name: str, weight_decay: float) -> float:
    """The L2 coefficient the loop adds to the loss (0 when the optimizer decays itself)."""
    if optimizer_name in ("sgd", "adam"):
        return resolve_weight_decay(optimizer_name, weight_decay)
    return 0.0


def make_optimizer(
    train_cfg: TrainConfig,
    *,
    optimizer: str | None = None,
    weight_decay: float | None = None,
) -> keras.optimizers.Optimizer:
    """Builds the optimizer (call under `strategy.scope()`).

    `optimizer` / `weight_decay` override `train.optimizer` / `train.weight_decay` (fine-tuning
    passes its `transfer.*` values). The learning rate is a placeholder: the loop drives it from
    the global step. Weight EMA is not the optimizer's business (`training.ema.WeightEMA`, built by
    the Trainer). With `mixed_precision=float16` the result is a
    `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling) around one of ours.
    """
    name = optimizer or train_cfg.optimizer
    wd = resolve_weight_decay(
        name, train_cfg.weight_decay if weight_decay is None else weight_decay
    )
    if name == "sgd":
        opt = SGD(0.0, momentum=train_cfg.momentum, nesterov=train_cfg.nesterov)
    elif name == "lars":
        opt = LARS(
            learning_rate=0.0,
            momentum=train_cfg.momentum,
            nesterov=train_cfg.nesterov,
            weight_decay_rate=wd,
        )
    elif name == "adam":
        opt = Adam(0.0)
    elif name == "adamw":
        opt = AdamW(learning_rate=0.0, weight_decay_rate=wd)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    if train_cfg.mixed_precision == "float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def start_phase(
    optimizer: keras.optimizers.Optimizer,
    owner_step: tf.Variable,
    phase_start_step: int | None,
    start: int,
    variables: list,
    lr_multipliers: dict[str, float],
) -> None:
    """Prepares `optimizer` for a `Trainer.train` call starting at global step `start`.

    With `phase_start_step` (fine-tuning phases), the optimizer's state starts afresh unless it
    already belongs to that phase: `owner_step` (a checkpointed int64 variable) records the start
    of the phase the state belongs to. `lr_multipliers` ({variable.path: factor}) apply to the
    `variables` this call trains.

    Raises:
      UsageError: a resumed checkpoint's optimizer state belongs to another phase than the
        schedule puts `start` in; or phases/multipliers with an optimizer that is not ours.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # under loss scaling
    phase_aware = hasattr(inner, "reset_state")
    if phase_start_step is not None:
        if not phase_aware:
            raise UsageError(
                f"phase_start_step needs an optimizer of training.optimizers, got "
                f"{type(inner).__name__}"
            )
        owner = int(owner_step.numpy())
        if owner != phase_start_step:
            if start != phase_start_step:
                raise UsageError(
                    f"the checkpoint at global step {start} holds optimizer state of a phase "
                    f"starting at step {owner}, but the schedule puts step {start} in a phase "
                    f"starting at {phase_start_step}: the schedule changed since it was saved"
                )
            inner.reset_state()
            owner_step.assign(phase_start_step)
            logging.info("fresh optimizer state for the phase starting at step %d", start)
    # Multipliers of variables this call does not train are moot.
    by_path = {v.path: v for v in variables}
    factors = [(by_path[p], f) for p, f in lr_multipliers.items() if p in by_path]
    if phase_aware:
        inner.set_lr_multipliers(factors)
    elif any(f != 1.0 for _, f in factors):
        raise UsageError(
            f"lr_multipliers need an optimizer of training.optimizers, got {type(inner).__name__}"
        )
