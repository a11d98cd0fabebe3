"""A transfer run's phases from its config: explicit `transfer.phases`, or a preset.

Learning rates are per 256 images: a phase's `base_learning_rate` (and a preset's
`transfer.base_learning_rate`) becomes the phase's effective `Phase.learning_rate` at the global
batch B = `train.global_batch_size` through `training.schedules.peak_learning_rate`: x B/256 for
sgd, x sqrt(B/256) for adam/adamw (`transfer.optimizer`). So a phase written `0.1` trains at 0.0125
at batch 32 under SGD, and the same config takes the same step per image at any batch.

Presets (used when `transfer.phases` is empty), over a budget of T steps (`train.train_steps`, or
`train.epochs` converted with `data.num_train_examples / train.global_batch_size`), with
lr = `transfer.base_learning_rate` (per 256 images) and f = `transfer.finetune_lr_factor`:
    linear_probe      head for T steps at lr
    lp_ft             head for T/4 at lr, then all for the rest at lr*f (Kumar et al., 2022)
    gradual_unfreeze  head, stage4+, stage3+, stage2+, all: T/5 each; lr, then lr*f
                      (top stage first, one more per phase; Howard & Ruder, 2018)
    bit_hyperrule     BiT-HyperRule (Kolesnikov et al., 2020; `bit_hyperrule()`): everything
                      trains from the start with SGD momentum 0.9 at 0.003 * batch / 512 (= base
                      0.0015 per 256 images), warmup, then x0.1 steps; length from
                      data.num_train_examples (T overrides it and the warmup and decays scale with
                      it); MixUp 0.1 from 20k examples on; zero head (transfer.head_init).
                      transfer.base_learning_rate is not used.
The first three are cosine-decayed.

`transfer.layer_decay` d (< 1) multiplies every phase's per-stage LR multipliers with
`layer_decay_multipliers(d)`: stage4 d, stage3 d^2, stage2 d^3, stage1 d^4, stem d^5, head 1.

Detection and segmentation: the new layers are the neck (stage `fpn`) and the heads, so where a
preset trains `head` alone they train `fpn,head` (the neck is as new as the heads).

Example:
    cfg = preset_config(cfg)            # what a preset sets beyond its phases (BiT: MixUp, zero head)
    phases = resolve_phases(cfg)        # [schedule.Phase, ...] end to end on the global step axis
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from transfer_tf.config import ConfigError, ExperimentConfig, PhaseConfig
from transfer_tf.models.resnet import STAGES
from transfer_tf.training.schedules import peak_learning_rate
from transfer_tf.transfer.schedule import Phase, parse_trainable

PRESETS = ("linear_probe", "lp_ft", "gradual_unfreeze", "bit_hyperrule")
# BiT-HyperRule's SGD learning rate 0.003 * B / 512, written per 256 images as every config LR.
BIT_BASE_LEARNING_RATE = 0.0015


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


@dataclass(frozen=True)
class BitHyperrule:
    """What BiT-HyperRule picks for a dataset (`bit_hyperrule`)."""

    total_steps: int
    warmup_steps: int
    decay_fractions: tuple[float, ...]  # x0.1 at these fractions of total_steps
    learning_rate: float  # effective at the batch: 0.003 * B / 512
    base_learning_rate: float  # per 256 images (SGD): 0.0015
    mixup_alpha: float
    # (resize, crop) side BiT fine-tunes at, from the images' size (None when not given).
    resolution: tuple[int, int] | None


# BiT's bit_hyperrule.get_schedule: [warmup end, decay, decay, decay, end] by dataset size.
_BIT_SUPPORTS = ((20_000, (100, 200, 300, 400, 500)), (500_000, (500, 3000, 6000, 9000, 10_000)))
_BIT_SUPPORTS_LARGE = (500, 6000, 12_000, 18_000, 20_000)


def bit_hyperrule(
    dataset_size: int, global_batch_size: int, image_side: int | None = None
) -> BitHyperrule:
    """BiT-HyperRule (Kolesnikov et al., 2020, github.com/google-research/big_transfer).

    Schedule by the number of training examples: < 20k -> 500 steps (warmup 100, x0.1 at 200,
    300, 400); < 500k -> 10k steps (warmup 500, x0.1 at 3k, 6k, 9k); else 20k steps (warmup 500,
    x0.1 at 6k, 12k, 18k). LR 0.003 * global_batch_size / 512 (SGD momentum 0.9), i.e. 0.0015 per
    256 images under the linear rule of `peak_learning_rate`. MixUp alpha 0.1
    from 20k examples on, else 0. Resolution by image size: images under 96 x 96 px are resized to
    160 and cropped to 128, larger ones to 512 / 480.

    Example: `bit_hyperrule(5_000, 64)` -> 500 steps, warmup 100, lr 0.000375, mixup 0.
    """
    if dataset_size <= 0:
        raise ConfigError(
            "config key 'data.num_train_examples': transfer.preset bit_hyperrule picks the "
            f"schedule from the dataset size; expected > 0, got {dataset_size}"
        )
    supports = _BIT_SUPPORTS_LARGE
    for limit, candidate in _BIT_SUPPORTS:
        if dataset_size < limit:
            supports = candidate
            break
    total = supports[-1]
    resolution = None
    if image_side is not None:
        resolution = (160, 128) if image_side * image_side < 96 * 96 else (512, 480)
    return BitHyperrule(
        total_steps=total,
        warmup_steps=supports[0],
        decay_fractions=tuple(s / total for s in supports[1:-1]),
        # 0.0015 * B / 256 is exactly 0.003 * B / 512 in binary floating point (halving is exact).
        learning_rate=peak_learning_rate(BIT_BASE_LEARNING_RATE, global_batch_size, "sgd"),
        base_learning_rate=BIT_BASE_LEARNING_RATE,
        mixup_alpha=0.0 if dataset_size < 20_000 else 0.1,
        resolution=resolution,
    )


def layer_decay_multipliers(decay: float) -> dict[str, float]:
    """Per-stage LR multipliers of layer-wise decay `decay`: the head 1, each stage below it one
    more factor (stage4 d, stage3 d^2, stage2 d^3, stage1 d^4, stem d^5)."""
    # A detector's FPN is new like the head: it trains at x1 and does not deepen the backbone.
    ranked = [s for s in STAGES if s != "fpn"]
    depth = {stage: len(ranked) - 1 - i for i, stage in enumerate(ranked)}
    return {"fpn": 1.0, **{stage: float(decay**n) for stage, n in depth.items()}}


def preset_phases(
    preset: str, total_steps: int, base_learning_rate: float, finetune_lr_factor: float = 0.1
) -> list[PhaseConfig]:
    """The phases of a named preset over `total_steps` (see module doc).

    Args:
      preset: linear_probe | lp_ft | gradual_unfreeze.
      total_steps: the budget, split between the phases.
      base_learning_rate: the head phase's LR per 256 images (`transfer.base_learning_rate`).
      finetune_lr_factor: later phases train at `base_learning_rate` times this.
    Returns:
      list[PhaseConfig]: phases with per-256 `base_learning_rate`s (`resolve_phases` scales them).

    Example: `preset_phases("lp_ft", 1000, 0.1)` -> probe (head, 250 steps, base 0.1), finetune
    (all, 750 steps, base 0.01).
    """
    ft_lr = base_learning_rate * finetune_lr_factor
    head_lr = base_learning_rate
    if preset == "linear_probe":
        plan = [("probe", "head", 1.0, head_lr)]
    elif preset == "lp_ft":
        plan = [("probe", "head", 0.25, head_lr), ("finetune", "all", 0.75, ft_lr)]
    elif preset == "gradual_unfreeze":
        specs = ["head", "stage4+", "stage3+", "stage2+", "all"]
        plan = [
            (f"unfreeze_{s.rstrip('+')}", s, 1 / len(specs), head_lr if i == 0 else ft_lr)
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
        phases.append(
            PhaseConfig(name=name, trainable=trainable, steps=steps, base_learning_rate=lr)
        )
    return phases


def resolve_phases(cfg: ExperimentConfig) -> list[Phase]:
    """The run's phases on the global step axis: `transfer.phases`, else `transfer.preset`.

    Each `Phase.learning_rate` is the effective (absolute) peak LR: the phase's per-256
    `base_learning_rate` scaled to `train.global_batch_size` for `transfer.optimizer`
    (`peak_learning_rate`); `Phase.base_learning_rate` keeps the config's value.

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
        if (
            cfg.train.train_steps <= 0
            and cfg.train.epochs <= 0
            and cfg.transfer.preset != "bit_hyperrule"
        ):
            raise ConfigError(
                f"config key 'transfer.preset': {cfg.transfer.preset} has no step budget; set "
                "train.train_steps or train.epochs"
            )
        if cfg.transfer.preset == "bit_hyperrule":
            configs = [bit_phase(cfg)]
        else:
            total = schedule_steps(cfg, cfg.train.epochs, cfg.train.train_steps, "train.epochs")
            configs = preset_phases(
                cfg.transfer.preset,
                total,
                cfg.transfer.base_learning_rate,
                cfg.transfer.finetune_lr_factor,
            )
            if cfg.transfer.task in ("detection", "segmentation"):
                configs = [
                    dataclasses.replace(pc, trainable="fpn,head") if pc.trainable == "head" else pc
                    for pc in configs
                ]
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
        if pc.base_learning_rate < 0:
            raise ConfigError(f"config key '{key}.base_learning_rate': must be >= 0")
        if pc.lr_schedule == "step" and not all(0 < f < 1 for f in pc.decay_fractions):
            raise ConfigError(
                f"config key '{key}.decay_fractions': expected fractions in (0, 1), got "
                f"{list(pc.decay_fractions)}"
            )
        steps = schedule_steps(cfg, pc.epochs, pc.steps, key)
        if pc.warmup_steps > 0 and pc.warmup_epochs > 0:
            raise ConfigError(
                f"config keys '{key}.warmup_steps' ({pc.warmup_steps}) and '{key}.warmup_epochs' "
                f"({pc.warmup_epochs}) conflict: set one"
            )
        warmup = pc.warmup_steps
        if pc.warmup_epochs > 0:
            warmup = schedule_steps(cfg, pc.warmup_epochs, 0, f"{key}.warmup_epochs")
        multipliers = dict(pc.lr_multipliers)
        if cfg.transfer.layer_decay < 1.0:
            for stage, mult in layer_decay_multipliers(cfg.transfer.layer_decay).items():
                if mult != 1.0:
                    multipliers[stage] = multipliers.get(stage, 1.0) * mult
        phases.append(
            Phase(
                index=i,
                name=pc.name or f"phase{i}",
                trainable_stages=stages,
                start_step=start,
                end_step=start + steps,
                learning_rate=peak_learning_rate(
                    pc.base_learning_rate, cfg.train.global_batch_size, cfg.transfer.optimizer
                ),
                base_learning_rate=pc.base_learning_rate,
                lr_schedule=pc.lr_schedule,
                warmup_steps=min(warmup, steps),
                lr_multipliers=multipliers,
                frozen_batchnorm=pc.frozen_batchnorm,
                decay_steps=tuple(
                    sorted({int(round(f * steps)) for f in pc.decay_fractions})
                    if pc.lr_schedule == "step"
                    else ()
                ),
            )
        )
        start += steps
    return phases


def bit_phase(cfg: ExperimentConfig) -> PhaseConfig:
    """The one phase of `transfer.preset: bit_hyperrule`: everything trains, BiT's LR, warmup and
    step decays; `train.train_steps` / `train.epochs`, when set, replace the rule's length (the
    warmup and the decays keep their fractions of it). Its LR is BiT's as a base per 256 images
    (0.0015), which `resolve_phases` scales back to exactly 0.003 * B / 512 under sgd.

    Raises:
      ConfigError: an optimizer other than sgd (the rule, and its LR, are SGD's).
    """
    _check_bit_optimizer(cfg)
    rule = bit_hyperrule(cfg.data.num_train_examples, cfg.train.global_batch_size)
    total, warmup = rule.total_steps, rule.warmup_steps
    if cfg.train.train_steps > 0 or cfg.train.epochs > 0:
        budget = schedule_steps(cfg, cfg.train.epochs, cfg.train.train_steps, "train.epochs")
        warmup = int(round(warmup * budget / total))
        total = budget
    return PhaseConfig(
        name="bit",
        trainable="all",
        steps=total,
        base_learning_rate=rule.base_learning_rate,
        lr_schedule="step",
        warmup_steps=warmup,
        decay_fractions=list(rule.decay_fractions),
    )


def preset_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with what its preset sets beyond the phases: bit_hyperrule's MixUp (when
    data.mixup_alpha is 0) and zero head (transfer.head_init). Other presets: `cfg` unchanged.

    Raises:
      ConfigError: bit_hyperrule with an optimizer other than sgd (the rule is SGD momentum 0.9).
    """
    if cfg.transfer.preset != "bit_hyperrule":
        return cfg
    _check_bit_optimizer(cfg)
    rule = bit_hyperrule(cfg.data.num_train_examples, cfg.train.global_batch_size)
    data = cfg.data
    if data.mixup_alpha == 0 and rule.mixup_alpha > 0:
        data = dataclasses.replace(data, mixup_alpha=rule.mixup_alpha)
    transfer = dataclasses.replace(cfg.transfer, head_init="zero")
    return dataclasses.replace(cfg, data=data, transfer=transfer)


def _check_bit_optimizer(cfg: ExperimentConfig) -> None:
    if cfg.transfer.optimizer != "sgd":
        raise ConfigError(
            f"config keys 'transfer.preset' (bit_hyperrule) and 'transfer.optimizer' "
            f"({cfg.transfer.optimizer!r}) conflict: BiT-HyperRule is SGD with momentum 0.9"
        )
