"""Keys a run would accept and never read: each is an error naming the key that rules instead.

A key "set" here is one whose value differs from its default: a config file, a `--set` override
and the resolved config.yaml a run writes compare alike, so a run dir's config always reloads
(setting a key to its default value is indistinguishable from not setting it, and harmless).

Two checks, by who can tell that a key goes unread:
  `unread_problem(cfg)`, from `config._validate` (every binary): keys that no run of this config
    reads, whichever binary loads it (the transfer schedule's, the train schedule's, the
    augmentation policy's and the multi-label keys here; the detection section's in
    `config_detection`, the ssl section's in `ssl.settings`).
  `finetune_unread_problem(cfg)`, from the fine-tuning job: `train.train_steps` / `train.epochs`
    beside explicit `transfer.phases`. Only fine-tuning ignores them (the phases carry their own
    length), and one config file may serve the pretraining job too (configs/demo.yaml), so the
    config loader cannot reject them.
Both return one line naming the two keys, or None.

Example:
    unread_problem(load_config("configs/coco_multilabel_resnet50.yaml",
                               ["transfer.base_learning_rate=0.5"]))
    # "config keys 'transfer.base_learning_rate' (0.5) and 'transfer.phases' (2 phases) conflict: ..."
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transfer_tf.config_schema import ExperimentConfig


def _shown(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _conflict(key: str, value, ruling: str, ruling_value, why: str, remedy: str = "") -> str:
    # transfer.phases is shown by its length (the list itself would fill the line).
    shown = f"{ruling_value} phases" if ruling == "transfer.phases" else repr(_shown(ruling_value))
    return (
        f"config keys '{key}' ({_shown(value)!r}) and '{ruling}' ({shown}) "
        f"conflict: {why}; {remedy or f'unset {key!r}'}"
    )


def _unread(cfg: ExperimentConfig) -> list[tuple[str, object, str, object, str]]:
    """(key, value, ruling key, its value, why) of every rule under which `cfg`'s runs would not
    read a key; the caller keeps those whose key is set."""
    t, d, train = cfg.transfer, cfg.data, cfg.train
    phases = len(t.phases)
    out = []
    if t.phases and not t.preset:
        why = "each phase sets its own learning rate (transfer.phases[i].base_learning_rate)"
        out += [
            ("transfer.base_learning_rate", t.base_learning_rate, "transfer.phases", phases, why),
            ("transfer.finetune_lr_factor", t.finetune_lr_factor, "transfer.phases", phases, why),
        ]
    if t.preset == "linear_probe":
        why = "linear_probe is one phase at transfer.base_learning_rate"
        out.append(
            ("transfer.finetune_lr_factor", t.finetune_lr_factor, "transfer.preset", t.preset, why)
        )
    if t.preset == "bit_hyperrule":
        why = "BiT-HyperRule picks the learning rate (0.003 x batch / 512)"
        out += [
            ("transfer.base_learning_rate", t.base_learning_rate, "transfer.preset", t.preset, why),
            ("transfer.finetune_lr_factor", t.finetune_lr_factor, "transfer.preset", t.preset, why),
        ]
    if train.lr_schedule != "step":
        why = "only lr_schedule step decays"
        for key in ("step_decay_epochs", "step_decay_rate"):
            value = getattr(train, key)
            out.append((f"train.{key}", value, "train.lr_schedule", train.lr_schedule, why))
    for i, phase in enumerate(t.phases):
        if phase.lr_schedule != "step":
            out.append(
                (
                    f"transfer.phases[{i}].decay_fractions",
                    phase.decay_fractions,
                    f"transfer.phases[{i}].lr_schedule",
                    phase.lr_schedule,
                    "only lr_schedule step decays",
                )
            )
    if d.augment_policy != "randaugment":
        why = "only augment_policy randaugment reads it"
        for key in ("randaugment_magnitude", "randaugment_layers"):
            value = getattr(d, key)
            out.append((f"data.{key}", value, "data.augment_policy", d.augment_policy, why))
    if d.schema == "classification":
        why = "single-label (softmax) runs do not read it; multi-label (schema coco) ones do"
        out += [
            ("transfer.pos_weight", t.pos_weight, "data.schema", d.schema, why),
            ("transfer.threshold", t.threshold, "data.schema", d.schema, why),
            ("data.min_object_covered", d.min_object_covered, "data.schema", d.schema, why),
        ]
    return out


def _default(key: str):
    """The schema default of a dotted key (`section.name` or `transfer.phases[i].name`)."""
    from transfer_tf.config_schema import ExperimentConfig, PhaseConfig

    if key.startswith("transfer.phases["):
        return getattr(PhaseConfig(), key.rsplit(".", 1)[1])
    section, name = key.split(".")
    return getattr(getattr(ExperimentConfig(), section), name)


def unread_problem(cfg: ExperimentConfig) -> str | None:
    """The first key `cfg` sets that none of its runs reads, as a one-line conflict naming the
    key that rules instead (see the module doc), or None."""
    for key, value, ruling, ruling_value, why in _unread(cfg):
        if value != _default(key):
            return _conflict(key, value, ruling, ruling_value, why)
    return None


def finetune_unread_problem(cfg: ExperimentConfig) -> str | None:
    """The fine-tuning job's own: `train.train_steps` or `train.epochs` set beside explicit
    `transfer.phases`, whose epochs/steps are the run's length (a preset reads them as its
    budget; the pretraining job reads them). A one-line conflict, or None."""
    t = cfg.transfer
    if not t.phases or t.preset:
        return None
    for key in ("train.train_steps", "train.epochs"):
        value = getattr(cfg.train, key.split(".")[1])
        if value != _default(key):
            return _conflict(
                key,
                value,
                "transfer.phases",
                len(t.phases),
                "fine-tuning runs each phase's own length (transfer.phases[i].epochs or .steps) "
                f"and does not read {key}, a preset's budget or the pretraining length",
                f"size the phases, or --set={key}=0",
            )
    return None
