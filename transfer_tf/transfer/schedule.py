"""The freeze/unfreeze schedule: phases on one global step axis, presets, freezing, LR multipliers.

A schedule is an ordered list of phases. Phase k covers global steps `[start_step, end_step)`;
phases are laid end to end, so the global step, the checkpoint directory and the summary stream
continue across phase changes, and the phase a run is in is a pure function of its global step
(a run killed mid-phase resumes in that phase: `phase_at_step`).

What trains in a phase (`PhaseConfig.trainable`) is a comma list of:
    head | stem | stage1 | stage2 | stage3 | stage4   exactly that stage
    stageN+                                          stageN and every stage above it, head included
    backbone                                         every stage but the head
    all                                              everything
e.g. `head`, `stage4,head` (= `stage4+`), `stage3+`, `all`.

Frozen layers get `trainable = False`; for BatchNormalization that is Keras 3 inference mode
(moving statistics used and not updated), the default `frozen_batchnorm: inference`. With
`frozen_batchnorm: train` frozen BN layers keep normalising with batch statistics and updating
their moving averages, while their gamma/beta still do not train (they are left out of the variables
handed to the optimizer).

Presets (used when `transfer.phases` is empty), over a budget of T steps (`train.train_steps`, or
`train.epochs` converted with `data.num_train_examples / train.global_batch_size`), with
lr = `transfer.learning_rate` and f = `transfer.finetune_lr_factor`:
    linear_probe      head for T steps at lr
    lp_ft             head for T/4 at lr, then all for the rest at lr*f (Kumar et al., 2022)
    gradual_unfreeze  head, stage4+, stage3+, stage2+, all: T/5 each; lr, then lr*f
                      (top stage first, one more per phase; Howard & Ruder, 2018)
Every preset phase is cosine-decayed.

Example:
    phases = resolve_phases(cfg)
    phase = phase_at_step(phases, global_step)
    variables = apply_phase(model, phase)               # freezes the rest, returns what trains
    multipliers = lr_multipliers(model, phase)          # {variable.path: multiplier}
    lr_fn = phase_schedule(phase)                       # global step tensor -> LR tensor
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import keras

from transfer_tf.config import ConfigError, ExperimentConfig, PhaseConfig
from transfer_tf.models.resnet import STAGES, layers_by_stage
from transfer_tf.training.schedules import Schedule, warmup_constant, warmup_cosine

PRESETS = ("linear_probe", "lp_ft", "gradual_unfreeze")
BACKBONE_STAGES = tuple(s for s in STAGES if s != "head")


@dataclass(frozen=True)
class Phase:
    """One resolved phase: steps are global and `[start_step, end_step)`."""

    index: int
    name: str
    trainable_stages: tuple[str, ...]
    start_step: int
    end_step: int
    learning_rate: float
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    frozen_batchnorm: str = "inference"

    @property
    def num_steps(self) -> int:
        return self.end_step - self.start_step


def parse_trainable(spec: str, key: str = "trainable") -> tuple[str, ...]:
    """Parses a trainable spec (see module doc) into stage names in `STAGES` order.

    Example: `parse_trainable("stage3+")` -> `("stage3", "stage4", "head")`.
    Raises:
      ConfigError: empty spec or an unknown token (the message names `key`).
    """
    chosen: set[str] = set()
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise ConfigError(f"config key '{key}': empty; expected e.g. head, stage4, stage3+, all")
    for token in tokens:
        if token == "all":
            chosen.update(STAGES)
        elif token == "backbone":
            chosen.update(BACKBONE_STAGES)
        elif token in STAGES:
            chosen.add(token)
        elif token.endswith("+") and token[:-1] in STAGES:
            chosen.update(STAGES[STAGES.index(token[:-1]) :])
        else:
            valid = ", ".join([*STAGES, "stage1+ .. stage4+", "backbone", "all"])
            raise ConfigError(f"config key '{key}': unknown stage {token!r} (valid: {valid})")
    return tuple(s for s in STAGES if s in chosen)


def schedule_steps(cfg: ExperimentConfig, epochs: float, steps: int, key: str) -> int:
    """Steps of a phase given as `steps` or `epochs` (converted with the train set size)."""
    if steps > 0:
        return steps
    if epochs <= 0:
        raise ConfigError(f"config key '{key}': set a positive epochs or steps")
    if cfg.data.num_train_examples <= 0:
        raise ConfigError(
            f"config key '{key}': epochs need data.num_train_examples > 0 (or give steps)"
        )
    return max(1, math.ceil(epochs * cfg.data.num_train_examples / cfg.train.global_batch_size))


def preset_phases(
    preset: str, total_steps: int, learning_rate: float, finetune_lr_factor: float = 0.1
) -> list[PhaseConfig]:
    """The phases of a named preset over `total_steps` (see module doc).

    Example: `preset_phases("lp_ft", 1000, 0.1)` -> probe (head, 250 steps, lr 0.1), finetune
    (all, 750 steps, lr 0.01).
    """
    ft_lr = learning_rate * finetune_lr_factor
    if preset == "linear_probe":
        plan = [("probe", "head", 1.0, learning_rate)]
    elif preset == "lp_ft":
        plan = [("probe", "head", 0.25, learning_rate), ("finetune", "all", 0.75, ft_lr)]
    elif preset == "gradual_unfreeze":
        specs = ["head", "stage4+", "stage3+", "stage2+", "all"]
        plan = [
            (f"unfreeze_{s.rstrip('+')}", s, 1 / len(specs), learning_rate if i == 0 else ft_lr)
            for i, s in enumerate(specs)
        ]
    else:
        raise ConfigError(
            f"config key 'transfer.preset': {preset!r} is not one of {', '.join(PRESETS)}"
        )
    if total_steps < len(plan):
        raise ConfigError(
            f"config key 'transfer.preset': {preset} needs at least {len(plan)} steps, "
            f"the budget is {total_steps}"
        )
    phases, used = [], 0
    for i, (name, trainable, share, lr) in enumerate(plan):
        # The last phase takes the rounding remainder so the budget is spent exactly.
        steps = total_steps - used if i == len(plan) - 1 else max(1, round(total_steps * share))
        used += steps
        phases.append(PhaseConfig(name=name, trainable=trainable, steps=steps, learning_rate=lr))
    return phases


def resolve_phases(cfg: ExperimentConfig) -> list[Phase]:
    """The run's phases on the global step axis: `transfer.phases`, else `transfer.preset`.

    Raises:
      ConfigError: no phases and no preset, a bad trainable spec or lr_multipliers key, or a
        length that cannot be computed.
    """
    configs = list(cfg.transfer.phases)
    prefix = "transfer.phases"
    if not configs:
        if not cfg.transfer.preset:
            raise ConfigError(
                "config key 'transfer.phases': empty; give phases or a transfer.preset "
                f"({', '.join(PRESETS)})"
            )
        if cfg.train.train_steps <= 0 and cfg.train.epochs <= 0:
            raise ConfigError(
                f"config key 'transfer.preset': {cfg.transfer.preset} has no step budget; set "
                "train.train_steps or train.epochs"
            )
        total = schedule_steps(cfg, cfg.train.epochs, cfg.train.train_steps, "train.epochs")
        configs = preset_phases(
            cfg.transfer.preset, total, cfg.transfer.learning_rate, cfg.transfer.finetune_lr_factor
        )
        prefix = f"transfer.preset[{cfg.transfer.preset}]"
    phases, start = [], 0
    for i, pc in enumerate(configs):
        key = f"{prefix}[{i}]"
        stages = parse_trainable(pc.trainable, f"{key}.trainable")
        for stage, mult in pc.lr_multipliers.items():
            if stage not in STAGES:
                raise ConfigError(
                    f"config key '{key}.lr_multipliers.{stage}': not a stage ({', '.join(STAGES)})"
                )
            if mult < 0:
                raise ConfigError(f"config key '{key}.lr_multipliers.{stage}': must be >= 0")
        if pc.learning_rate < 0:
            raise ConfigError(f"config key '{key}.learning_rate': must be >= 0")
        steps = schedule_steps(cfg, pc.epochs, pc.steps, key)
        phases.append(
            Phase(
                index=i,
                name=pc.name or f"phase{i}",
                trainable_stages=stages,
                start_step=start,
                end_step=start + steps,
                learning_rate=pc.learning_rate,
                lr_schedule=pc.lr_schedule,
                warmup_steps=min(pc.warmup_steps, steps),
                lr_multipliers=dict(pc.lr_multipliers),
                frozen_batchnorm=pc.frozen_batchnorm,
            )
        )
        start += steps
    return phases


def total_steps(phases: list[Phase]) -> int:
    """The last global step of the schedule (its end)."""
    return phases[-1].end_step if phases else 0


def phase_at_step(phases: list[Phase], global_step: int) -> Phase | None:
    """The phase that global step `global_step` belongs to; None once the schedule is done."""
    for phase in phases:
        if phase.start_step <= global_step < phase.end_step:
            return phase
    return None


def phase_schedule(phase: Phase) -> Schedule:
    """The phase's LR as a function of the GLOBAL step (a `training.schedules` Schedule): linear
    warmup over `warmup_steps` from the phase start, then constant or cosine to 0 at its end."""
    if phase.lr_schedule == "constant":
        return warmup_constant(phase.learning_rate, phase.warmup_steps, phase.start_step)
    return warmup_cosine(
        phase.learning_rate, phase.warmup_steps, phase.num_steps, start_step=phase.start_step
    )


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def apply_phase(model: keras.Model, phase: Phase) -> list[keras.Variable]:
    """Freezes every stage `phase` does not train and returns the variables that do train.

    Layers of trained stages get `trainable = True`; layers of frozen stages `trainable = False`,
    except BatchNormalization layers when `phase.frozen_batchnorm == "train"` (they stay in
    training mode, see module doc). The returned list (model order, no duplicates) is exactly the
    trainable weights of the trained stages: hand it to the training loop as its variables.
    """
    trained: list[keras.Variable] = []
    for stage, layers in layers_by_stage(model).items():
        on = stage in phase.trainable_stages
        for layer in layers:
            if on:
                layer.trainable = True
                trained.extend(layer.trainable_weights)
            elif (
                isinstance(layer, keras.layers.BatchNormalization)
                and phase.frozen_batchnorm == "train"
            ):
                layer.trainable = True
            else:
                layer.trainable = False
    return _unique(trained)


def lr_multipliers(model: keras.Model, phase: Phase) -> dict[str, float]:
    """`{variable.path: multiplier}` for the variables of stages listed in `phase.lr_multipliers`
    (every other variable trains at 1x the phase LR)."""
    if not phase.lr_multipliers:
        return {}
    out = {}
    for stage, layers in layers_by_stage(model).items():
        if stage in phase.lr_multipliers:
            for layer in layers:
                for v in layer.trainable_weights:
                    out[v.path] = float(phase.lr_multipliers[stage])
    return out


def describe(phases: list[Phase]) -> list[dict]:
    """Plain-data view of the schedule (for logs and the run's schedule.json)."""
    return [{**dataclasses.asdict(p), "trainable_stages": list(p.trainable_stages)} for p in phases]
