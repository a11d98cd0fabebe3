"""Typed experiment configs: YAML files + `--set key.sub=value` overrides, strictly validated.

An experiment is one `ExperimentConfig` made of small section dataclasses. Every key in a YAML file
or an override must name a field; an unknown key is an error that names it and the closest valid
keys, and a value of the wrong type is an error that names the key and the expected type.

Example:
    cfg = load_config("configs/demo.yaml", overrides=["train.epochs=2", "data.image_size=64"])
    cfg.train.epochs  # -> 2
    save_config(cfg, "runs/x/config.yaml")  # the resolved config, reloadable with load_config
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid config: the message names the offending key and what was expected."""


# ----------------------------------------------------------------------------------------------
# Sections. Each field is documented where its meaning is not obvious from its name.
# ----------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the data is and how it becomes model inputs."""

    # Source: TFRecord file patterns (any TF filesystem path, comma-separated allowed), or
    # `tfds:NAME[/CONFIG]` to read a TensorFlow Datasets builder through the same parsers.
    train_pattern: str = ""
    eval_pattern: str = ""
    tfds_data_dir: str = ""
    tfds_manual_dir: str = ""
    # TFRecord schema of the shards: `classification` (imagenet_to_gcs.py) or `coco`.
    schema: str = "classification"
    num_classes: int = 1000
    # Stored label minus this offset is the model's class index. Public ImageNet shards are 1..1000,
    # so 1; shards written with --label_offset=0 use 0. Never guessed.
    label_offset: int = 1
    # COCO: JSON label map written by make_coco_tfrecords (category id -> contiguous index).
    label_map_file: str = ""
    # Human-readable class names, one per line, in class-index order (shipped with exports).
    label_names_file: str = ""
    num_train_examples: int = 0
    num_eval_examples: int = 0
    image_size: int = 224
    # Train augmentation.
    crop_area_range: tuple[float, float] = (0.08, 1.0)
    crop_aspect_range: tuple[float, float] = (0.75, 4.0 / 3.0)
    # COCO multi-label crops: minimum fraction of an object's box that must stay in the crop for
    # its label to be kept.
    min_object_covered: float = 0.5
    random_flip: bool = True
    augment_policy: str = "none"  # none | randaugment | autoaugment
    randaugment_magnitude: float = 0.5
    randaugment_layers: int = 2
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Eval: center crop of this fraction of the short side, then resize.
    eval_crop_fraction: float = 0.875
    # tf.data knobs.
    shuffle_buffer: int = 10_000
    file_shuffle: bool = True
    cycle_length: int = 16
    num_parallel_calls: int = -1  # -1 = AUTOTUNE
    prefetch: int = -1  # -1 = AUTOTUNE
    skip_corrupt: bool = False
    # `grpc://HOST:PORT` of a tf.data service dispatcher; empty = preprocess in-process.
    tf_data_service: str = ""

    @property
    def task(self) -> str:
        """`single_label` (softmax) for the classification schema, `multilabel` (sigmoid) for COCO."""
        return "multilabel" if self.schema == "coco" else "single_label"


@dataclass
class ModelConfig:
    """Backbone and head."""

    name: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | resnet152
    dropout: float = 0.0
    zero_init_residual_gamma: bool = True
    sync_batchnorm: bool = False
    batchnorm_momentum: float = 0.9
    batchnorm_epsilon: float = 1e-5
    # Keras weights file to start the backbone from (e.g. the standard
    # resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5); empty = random init.
    init_weights: str = ""
    # Per-channel normalisation applied inside the model (inputs are uint8-range images).
    mean_rgb: tuple[float, float, float] = (123.675, 116.28, 103.53)
    stddev_rgb: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # `standardize`: (rgb - mean_rgb) / stddev_rgb. `caffe`: RGB->BGR minus the ImageNet BGR mean,
    # unscaled: what the standard Keras ImageNet ResNet weights expect (use it with init_weights).
    input_preprocessing: str = "standardize"


@dataclass
class TrainConfig:
    """Optimisation and the training loop."""

    global_batch_size: int = 1024
    epochs: float = 90.0
    # If > 0, overrides epochs * num_train_examples / global_batch_size.
    train_steps: int = 0
    optimizer: str = "sgd"  # sgd | lars | adamw
    momentum: float = 0.9
    nesterov: bool = False
    # Learning rate for a global batch of 256; scaled linearly with global_batch_size.
    base_learning_rate: float = 0.1
    lr_schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 5.0
    step_decay_epochs: list[float] = field(default_factory=lambda: [30.0, 60.0, 80.0])
    step_decay_rate: float = 0.1
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # 0 = no weight EMA
    mixed_precision: str = "none"  # bfloat16 | float16 | none
    xla: bool = False
    steps_per_execution: int = 1
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 5
    eval_every_epochs: float = 1.0
    log_every_steps: int = 100
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker_mirrored | tpu
    tpu: str = ""
    # Warm start: a run dir or checkpoint prefix whose model weights seed a NEW run (ignored when
    # model_dir already has a checkpoint: resuming wins).
    init_checkpoint: str = ""
    # Also checkpoint the tf.data iterator (exact resume; saves the shuffle buffer, one replica).
    checkpoint_input: bool = False


@dataclass
class PhaseConfig:
    """One phase of the transfer schedule: what trains, for how long, at which learning rate."""

    name: str = ""
    # What trains: `head`, `stage4`, `stage3+` (stage3 and above), `all`, or a comma list.
    trainable: str = "head"
    epochs: float = 0.0
    steps: int = 0
    learning_rate: float = 0.01
    lr_schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    # Optional per-stage multipliers of the phase learning rate, e.g. {stage3: 0.1}.
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    # How frozen BatchNorm layers behave: `inference` (use moving stats, do not update) or `train`.
    frozen_batchnorm: str = "inference"


@dataclass
class TransferConfig:
    """Fine-tuning: task type, head, and the freeze/unfreeze schedule."""

    # A named preset (linear_probe | lp_ft | gradual_unfreeze) used when `phases` is empty. Its
    # budget is train.train_steps (or train.epochs); see transfer_tf/transfer/schedule.py.
    preset: str = ""
    # The pretrained backbone (finetune --init_checkpoint): a pretraining model_dir, a Keras
    # weights .h5 / .weights.h5, or an exported SavedModel. Empty = model.init_weights or scratch.
    init_checkpoint: str = ""
    # Presets: learning rate of the head-only phase; later (unfrozen) phases use it times
    # `finetune_lr_factor`.
    learning_rate: float = 0.1
    finetune_lr_factor: float = 0.1
    phases: list[PhaseConfig] = field(default_factory=list)
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    # Multi-label: weight on positive terms of the binary cross-entropy (1 = unweighted).
    pos_weight: float = 1.0
    threshold: float = 0.5


@dataclass
class ExportConfig:
    """SavedModel export."""

    top_k: int = 5
    # `auto` derives softmax/sigmoid from the task.
    output_activation: str = "auto"  # auto | softmax | sigmoid


@dataclass
class DemoConfig:
    """`make demo` (pipelines/demo.py): sizes of the generated data; ignored by other binaries."""

    # ImageNet-like set: data.num_classes classes (shape x colour), images per class.
    train_per_class: int = 60
    val_per_class: int = 10
    # Generated images' width and height are each drawn from [min, max] pixels.
    raw_image_size: tuple[int, int] = (48, 96)
    # COCO-like scenes composing the same vocabulary; one category per id (gaps as in COCO).
    coco_train_images: int = 240
    coco_val_images: int = 80
    coco_category_ids: list[int] = field(default_factory=lambda: [1, 3, 4, 7, 9, 13, 18, 22])
    objects_per_image: tuple[int, int] = (1, 3)
    coco_image_size: tuple[int, int] = (64, 112)
    # TFRecord builders.
    train_shards: int = 4
    validation_shards: int = 2
    num_workers: int = 2
    # Fine-tuning from scratch at the same step budget: one `all` phase at this learning rate
    # (0 = the largest learning rate of transfer.phases).
    scratch_learning_rate: float = 0.0
    # Run the training/evaluate/export/predict stages inside the demo process (the same library
    # calls their binaries make; one TensorFlow start-up instead of one per stage) or, if false,
    # as one `python -m pipelines.*` subprocess each.
    in_process: bool = True


@dataclass
class ExperimentConfig:
    """The whole experiment: one YAML file."""

    name: str = "experiment"
    seed: int = 0
    # Deterministic ops and tf.data order (slower): for tests and debugging.
    deterministic: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)


# Values a field may take, checked after loading: "section.key" -> allowed values.
_CHOICES: dict[str, tuple[str, ...]] = {
    "data.schema": ("classification", "coco"),
    "data.augment_policy": ("none", "randaugment", "autoaugment"),
    "model.name": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "model.input_preprocessing": ("standardize", "caffe"),
    "train.optimizer": ("sgd", "lars", "adamw"),
    "train.lr_schedule": ("cosine", "step", "constant"),
    "train.mixed_precision": ("bfloat16", "float16", "none"),
    "train.strategy": ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"),
    "transfer.preset": ("", "linear_probe", "lp_ft", "gradual_unfreeze"),
    "transfer.optimizer": ("sgd", "adamw"),
    "export.output_activation": ("auto", "softmax", "sigmoid"),
    "phase.lr_schedule": ("cosine", "constant"),
    "phase.frozen_batchnorm": ("inference", "train"),
}


# ----------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with strict checks.
# ----------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Returns `value` converted to type `tp`, or raises ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"config key '{key}': expected a list of {len(args)} values, got {value!r}"
            )
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return {
            _convert(k, args[0], f"{key}.{k}"): _convert(v, args[1], f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported field type {_type_name(tp)}")


def _unknown_key_error(cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    full = f"{prefix}.{key}" if prefix else key
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    where = f"'{prefix}'" if prefix else "the top level"
    return ConfigError(
        f"unknown config key '{full}'{hint} (valid keys in {where}: {', '.join(names)})"
    )


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise _unknown_key_error(cls, str(key), prefix)
        full = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def to_dict(cfg: Any) -> dict:
    """Returns the config as plain dicts/lists/scalars (YAML- and JSON-serialisable)."""
    return _to_plain(cfg)


def _set_path(data: dict, cls: type, path: list[str], value: Any, full: str) -> None:
    """Writes `value` at `path` into `data` (a plain dict for dataclass `cls`), checking names."""
    hints = typing.get_type_hints(cls)
    head = path[0]
    if head not in hints:
        raise _unknown_key_error(cls, head, ".".join(full.split(".")[: -len(path)]))
    if len(path) == 1:
        data[head] = value
        return
    tp = hints[head]
    if dataclasses.is_dataclass(tp):
        sub = data.setdefault(head, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"config key '{full}': '{head}' is not a mapping")
        _set_path(sub, tp, path[1:], value, full)
        return
    if typing.get_origin(tp) is dict and len(path) == 2:
        sub = data.setdefault(head, {})
        sub[path[1]] = value
        return
    if typing.get_origin(tp) is list and path[1].isdigit():
        items = data.get(head)
        index = int(path[1])
        if not isinstance(items, list) or index >= len(items):
            raise ConfigError(f"config key '{full}': index {index} is out of range")
        (elem_tp,) = typing.get_args(tp)
        if len(path) == 2:
            items[index] = value
        elif dataclasses.is_dataclass(elem_tp):
            _set_path(items[index], elem_tp, path[2:], value, full)
        else:
            raise ConfigError(f"config key '{full}': cannot index into {head}[{index}]")
        return
    raise ConfigError(f"config key '{full}': '{head}' has no sub-keys")


def parse_override(text: str) -> tuple[str, Any]:
    """Splits `key.sub=value`; the value is parsed as YAML (`3`, `0.1`, `true`, `[1, 2]`, `abc`)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. train.epochs=2")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _validate(cfg: ExperimentConfig) -> None:
    for dotted, allowed in _CHOICES.items():
        section, key = dotted.split(".")
        if section == "phase":
            targets = [
                (f"transfer.phases[{i}].{key}", p) for i, p in enumerate(cfg.transfer.phases)
            ]
        else:
            targets = [(dotted, getattr(cfg, section))]
        for name, obj in targets:
            value = getattr(obj, key)
            if value not in allowed:
                choices = ", ".join(repr(a) for a in allowed)
                raise ConfigError(f"config key '{name}': {value!r} is not one of {choices}")
    positive = {
        "data.image_size": cfg.data.image_size,
        "data.num_classes": cfg.data.num_classes,
        "train.global_batch_size": cfg.train.global_batch_size,
        "train.steps_per_execution": cfg.train.steps_per_execution,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
        "export.top_k": cfg.export.top_k,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{name}': expected a positive value, got {value!r}")
    lo, hi = cfg.data.crop_area_range
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(
            f"config key 'data.crop_area_range': expected 0 < min <= max <= 1, got {[lo, hi]}"
        )
    lo, hi = cfg.data.crop_aspect_range
    if not 0.0 < lo <= hi:
        raise ConfigError(
            f"config key 'data.crop_aspect_range': expected 0 < min <= max, got {[lo, hi]}"
        )
    if not 0.0 < cfg.data.eval_crop_fraction <= 1.0:
        raise ConfigError("config key 'data.eval_crop_fraction': expected a value in (0, 1]")
    for i, phase in enumerate(cfg.transfer.phases):
        if (phase.epochs > 0) == (phase.steps > 0):
            raise ConfigError(
                f"config key 'transfer.phases[{i}]': set exactly one of epochs or steps"
            )


def config_from_dict(
    data: dict | None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Builds and validates an ExperimentConfig from plain data plus `key=value` overrides."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    # Validate the file's own keys first so that errors point at the file, not an override.
    _build(ExperimentConfig, data)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, ExperimentConfig, key.split("."), value, key)
    cfg = _build(ExperimentConfig, data)
    _validate(cfg)
    return cfg


def load_config(
    path: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Loads a YAML experiment file (or the defaults if `path` is None) and applies overrides.

    Args:
      path: YAML file. A top-level `base: OTHER.yaml` key (relative to this file) is loaded first
        and this file's keys are merged over it.
      overrides: `key.sub=value` strings, applied in order.
    Raises:
      ConfigError: missing/unreadable file, bad YAML, unknown key, wrong type or invalid value.
    """
    data = _read_yaml(path) if path else {}
    return config_from_dict(copy.deepcopy(data), overrides)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: str, _seen: tuple[str, ...] = ()) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist")
    if os.path.abspath(path) in _seen:
        raise ConfigError(f"config file '{path}': 'base' chain loops back on itself")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}'{where}: not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': expected a mapping at the top level")
    base = data.pop("base", None)
    if base:
        base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base)
        data = _merge(_read_yaml(base_path, _seen + (os.path.abspath(path),)), data)
    return data


def save_config(cfg: ExperimentConfig, path: str) -> None:
    """Writes the resolved config as YAML (atomically) so the run can be reproduced from it."""
    import tensorflow as tf  # gfile: model_dir may be gs://

    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
