"""The freeze/unfreeze schedule at run time: phases on one global step axis, freezing, LR multipliers.

A schedule is an ordered list of phases. Phase k covers global steps `[start_step, end_step)`;
phases are laid end to end, so the global step, the checkpoint directory and the summary stream
continue across phase changes, and the phase a run is in is a pure function of its global step
(a run killed mid-phase resumes in that phase: `phase_at_step`).

What trains in a phase (`PhaseConfig.trainable`) is a comma list of:
    head | stem | stage1 | stage2 | stage3 | stage4   exactly that stage
    fpn                                              a detector's or segmenter's neck (FPN, ASPP)
    stageN+                                          stageN and every stage above it, head included
    backbone                                         every stage but the fpn and head
    all                                              everything
e.g. `head`, `stage4,head` (= `stage4+`), `stage3+`, `all`.

Frozen layers get `trainable = False`; for BatchNormalization that is Keras 3 inference mode
(moving statistics used and not updated), the default `frozen_batchnorm: inference`. With
`frozen_batchnorm: train` frozen BN layers keep normalising with batch statistics and updating
their moving averages, while their gamma/beta still do not train (they are left out of the variables
handed to the optimizer).

Phases come from the config through `transfer.phases.resolve_phases` (explicit phases, or a
preset); this module runs them. A config's phase LR (`base_learning_rate`) is per 256 images;
`Phase.learning_rate` is the effective LR at the run's global batch B that it resolves to (x B/256
for sgd, x sqrt(B/256) for adam/adamw, `training.schedules.peak_learning_rate`), and
schedule.json records both.

Example:
    phases = phases_lib.resolve_phases(cfg)
    phase = phase_at_step(phases, global_step)
    variables = apply_phase(model, phase)               # freezes the rest, returns what trains
    multipliers = lr_multipliers(model, phase)          # {variable.path: multiplier}
    lr_fn = phase_schedule(phase)                       # global step tensor -> LR tensor
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import keras

from transfer_tf.config import ConfigError
from transfer_tf.models.resnet import NEW_STAGES, STAGES, layers_by_stage
from transfer_tf.training.schedules import (
    Schedule,
    warmup_constant,
    warmup_cosine,
    warmup_step_decay,
)

BACKBONE_STAGES = tuple(s for s in STAGES if s not in NEW_STAGES)


@dataclass(frozen=True)
class Phase:
    """One resolved phase: steps are global and `[start_step, end_step)`."""

    index: int
    name: str
    trainable_stages: tuple[str, ...]
    start_step: int
    end_step: int
    # The effective peak LR at the run's batch (what the optimizer gets before warmup and decay).
    learning_rate: float
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    frozen_batchnorm: str = "inference"
    # lr_schedule "step": steps (from the phase start) at which the LR drops x0.1.
    decay_steps: tuple[int, ...] = ()
    # The config's value per 256 images that `learning_rate` was scaled from (None: a Phase
    # built directly with an absolute LR).
    base_learning_rate: float | None = None

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
    warmup over `warmup_steps` from the phase start, then constant, cosine to 0 at its end, or x0.1
    at each of `decay_steps` (counted from the phase start)."""
    if phase.lr_schedule == "constant":
        return warmup_constant(phase.learning_rate, phase.warmup_steps, phase.start_step)
    if phase.lr_schedule == "step":
        return warmup_step_decay(
            phase.learning_rate, phase.warmup_steps, phase.decay_steps, 0.1, phase.start_step
        )
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
