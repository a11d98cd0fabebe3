"""Keys a run would accept and never read: each is an error naming the key that rules instead.

A key "set" here is one whose value differs from its default: a config file, a `--set` override
and the resolved config.yaml a run writes compare alike, so a run dir's config always reloads
(setting a key to its default value is indistinguishable from not setting it, and harmless).

Two checks, by who can tell that a key goes unread:
  `unread_problem(cfg)`, from `config._validate` (every binary): keys that no run of this config
    reads, whichever binary loads it (the transfer schedule's, the train schedule's, the
    augmentation policy's and the multi-label keys here; the detection section's in
    `detection.settings`, the ssl section's in `ssl.settings`).
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

import dataclasses
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


def detection_unread_problem(cfg: ExperimentConfig) -> str | None:
    """The first key a detection run does not read (naming the `detection.*` key that rules
    instead), or a `detection.*` key set on a run that is not detection; None if neither."""
    if cfg.transfer.task != "detection":
        return _detection_section_unread(cfg)
    for key, ruling, why in _unread_by_detection(cfg):
        value = _value(cfg, key)
        rule = f"'{ruling}' ({_value(cfg, ruling)!r}) {why}" if ruling else why
        unread = "takes no bit_hyperrule" if key == "transfer.preset" else f"does not read {key}"
        return (
            f"config keys '{key}' ({value!r}) and 'transfer.task' (detection) conflict: a "
            f"detection run {unread}; {rule}"
        )
    return None


def _value(cfg, dotted: str):
    section, key = dotted.split(".")
    value = getattr(getattr(cfg, section), key)
    return list(value) if isinstance(value, (list, tuple)) else value


def _unread_by_detection(cfg) -> list[tuple[str, str | None, str]]:
    """(key, the key that rules instead or None, why) of each key `cfg` sets (a value other than
    its default) that a detection run does not read."""
    from transfer_tf.config_schema import DataConfig, ExportConfig, ModelConfig, TransferConfig

    defaults = {
        "data": DataConfig(),
        "model": ModelConfig(),
        "transfer": TransferConfig(),
        "export": ExportConfig(),
    }
    augment = "with data.random_flip is detection's augmentation"
    table = [
        ("data.image_size", "detection.image_size", "sets the detector's input size"),
        ("data.eval_crop_fraction", "detection.image_size", "is the whole eval image's long side"),
        ("data.crop_area_range", "detection.scale_jitter", augment),
        ("data.crop_aspect_range", "detection.scale_jitter", augment),
        ("data.min_object_covered", "detection.scale_jitter", augment),
        ("data.random_rotation_degrees", "detection.scale_jitter", augment),
        ("data.color_jitter", "detection.scale_jitter", augment),
        ("data.mixup_alpha", "detection.scale_jitter", augment),
        ("data.cutmix_alpha", "detection.scale_jitter", augment),
        ("data.augment_policy", "detection.scale_jitter", augment),
        (
            "transfer.label_smoothing",
            "detection.focal_alpha",
            "(with focal_gamma) shapes its classification loss",
        ),
        ("transfer.pos_weight", "detection.focal_alpha", "weighs its positives"),
        ("transfer.threshold", "detection.score_threshold", "keeps its detections"),
        (
            "transfer.head_init",
            "detection.prior_probability",
            "sets the RetinaNet heads' initial bias",
        ),
        (
            "transfer.head_prior",
            "detection.prior_probability",
            "sets the RetinaNet heads' initial bias",
        ),
        (
            "model.dropout",
            "detection.head_convs",
            "shapes its heads (it has no classifier head to drop out)",
        ),
        ("export.top_k", "detection.max_detections", "sizes its serving outputs"),
        (
            "export.output_activation",
            "detection.score_threshold",
            "filters its serving scores (per-class sigmoids)",
        ),
    ]
    out = []
    for key, ruling, why in table:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value == getattr(defaults[section], name):
            continue
        if key == "data.image_size" and value == cfg.detection.image_size:
            continue  # the same size said twice
        out.append((key, ruling, why))
    if cfg.transfer.preset == "bit_hyperrule":
        out.append(
            ("transfer.preset", None, "BiT-HyperRule's MixUp and zero head are a classifier's")
        )
    return out


def _detection_section_unread(cfg) -> str | None:
    """The error for a `detection.*` key set (not its default) where `transfer.task` is not
    detection: no other run reads the section."""
    from transfer_tf.detection.settings import DetectionConfig

    default = DetectionConfig()
    for f in dataclasses.fields(DetectionConfig):
        value = getattr(cfg.detection, f.name)
        if value != getattr(default, f.name):
            value = list(value) if isinstance(value, (list, tuple)) else value
            instead = (
                "; a classifier's input size is 'data.image_size'" if f.name == "image_size" else ""
            )
            return (
                f"config keys 'detection.{f.name}' ({value!r}) and 'transfer.task' "
                f"({cfg.transfer.task!r}) conflict: only transfer.task: detection reads the "
                f"detection section{instead}"
            )
    return None
