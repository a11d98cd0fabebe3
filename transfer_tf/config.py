"""Typed experiment configs: YAML files + `--set key.sub=value` overrides, strictly validated.

An experiment is one `ExperimentConfig` made of small section dataclasses. Every key in a YAML file
or an override must name a field; an unknown key is an error that names it and the closest valid
keys (a renamed key: its new name, `RENAMED_KEYS`), and a value of the wrong type is an error that
names the key and the expected type.

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
from typing import Any

import yaml

from transfer_tf.config_renamed import (
    LR_RENAME_HINT,
    RENAMED,
    RENAMED_KEYS,
    renamed_key_error,
    translate_renamed,
)
from transfer_tf.config_schema import (  # noqa: F401  (re-exported: the config API)
    CHOICES,
    DataConfig,
    DemoConfig,
    DetectionConfig,
    ExperimentConfig,
    ExportConfig,
    ModelConfig,
    PhaseConfig,
    SSLConfig,
    TrainConfig,
    TransferConfig,
)
from transfer_tf.config_train import train_problem
from transfer_tf.config_unread import detection_unread_problem, unread_problem
from transfer_tf.detection.settings import detection_problem
from transfer_tf.errors import ConfigError  # noqa: F401  (re-exported)
from transfer_tf.segmentation.settings import segmentation_problem
from transfer_tf.ssl.settings import validate_ssl

# `data.num_classes: auto` is stored as this value until data/manifest.py fills it in.
AUTO_NUM_CLASSES = 0
_AUTO_INT_KEYS = {"data.num_classes": AUTO_NUM_CLASSES}


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
        # The first alternative that takes the value (e.g. `bool | str`: true/false or "auto").
        first_error = None
        for alternative in inner:
            try:
                return _convert(value, alternative, key)
            except ConfigError as e:
                first_error = first_error or e
        raise first_error
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
        if value == "auto" and key in _AUTO_INT_KEYS:
            return _AUTO_INT_KEYS[key]
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
    full = f"{prefix}.{key}" if prefix else key
    renamed = RENAMED_KEYS.get(cls, {}).get(key)
    if renamed:
        return ConfigError(f"config key '{full}' was renamed '{renamed}' {LR_RENAME_HINT}")
    if full in RENAMED:
        return renamed_key_error(full)
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
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
    for dotted, allowed in CHOICES.items():
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
        "train.global_batch_size": cfg.train.global_batch_size,
        "train.steps_per_execution": cfg.train.steps_per_execution,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
        "export.top_k": cfg.export.top_k,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{name}': expected a positive value, got {value!r}")
    if cfg.data.num_classes < 0:
        raise ConfigError(
            f"config key 'data.num_classes': expected a positive count or auto, got "
            f"{cfg.data.num_classes!r}"
        )
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
    if not 0.0 <= cfg.data.random_rotation_degrees <= 180.0:
        raise ConfigError(
            "config key 'data.random_rotation_degrees': expected 0 (off) to 180 degrees, got "
            f"{cfg.data.random_rotation_degrees}"
        )
    jitter = cfg.data.color_jitter
    if min(jitter) < 0.0 or jitter[3] > 0.5:
        raise ConfigError(
            "config key 'data.color_jitter': expected [brightness, contrast, saturation, hue] "
            f">= 0 with hue <= 0.5, got {list(jitter)}"
        )
    if cfg.data.num_parallel_calls < -1:
        raise ConfigError(
            "config key 'data.num_parallel_calls': expected -1 (AUTOTUNE), 0 (cores + 1) or a "
            f"positive count, got {cfg.data.num_parallel_calls}"
        )
    if cfg.export.max_image_pixels < 0:
        raise ConfigError(
            "config key 'export.max_image_pixels': expected a pixel count, or 0 (no limit), got "
            f"{cfg.export.max_image_pixels}"
        )
    if not 0.0 < cfg.data.eval_crop_fraction <= 1.0:
        raise ConfigError("config key 'data.eval_crop_fraction': expected a value in (0, 1]")
    for problem in (
        train_problem(cfg),
        detection_problem(cfg),
        detection_unread_problem(cfg),
        segmentation_problem(cfg),
        unread_problem(cfg),
    ):
        if problem:
            raise ConfigError(problem)
    for i, phase in enumerate(cfg.transfer.phases):
        if (phase.epochs > 0) == (phase.steps > 0):
            raise ConfigError(
                f"config key 'transfer.phases[{i}]': set exactly one of epochs or steps"
            )
    if cfg.transfer.preset and cfg.transfer.phases:
        raise ConfigError(
            f"config keys 'transfer.preset' ({cfg.transfer.preset!r}) and 'transfer.phases' "
            f"({len(cfg.transfer.phases)} phases) conflict: the preset replaces the phases; "
            "use --set=transfer.phases=[] with the preset (finetune --preset does), or drop it"
        )
    if not 0.0 < cfg.transfer.layer_decay <= 1.0:
        raise ConfigError(
            "config key 'transfer.layer_decay': expected 0 < value <= 1 (1 = off), got "
            f"{cfg.transfer.layer_decay}"
        )
    if not 0.0 <= cfg.transfer.head_prior < 1.0:
        raise ConfigError(
            "config key 'transfer.head_prior': expected a probability in (0, 1), or 0 (off), got "
            f"{cfg.transfer.head_prior}"
        )
    if cfg.transfer.head_prior > 0 and cfg.data.task != "multilabel":
        raise ConfigError(
            f"config keys 'transfer.head_prior' ({cfg.transfer.head_prior}) and 'data.schema' "
            f"({cfg.data.schema!r}) conflict: a prior-probability bias is for sigmoid "
            "(multi-label, schema coco) heads"
        )
    for name in ("train.label_smoothing", "transfer.label_smoothing"):
        section, key = name.split(".")
        if not 0.0 <= getattr(getattr(cfg, section), key) < 1.0:
            raise ConfigError(f"config key '{name}': expected a value in [0, 1)")
    validate_ssl(cfg)


def config_from_dict(
    data: dict | None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Builds and validates an ExperimentConfig from plain data plus `key=value` overrides."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    translate_renamed(data)
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
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}': expected a mapping at the top level")
    base = data.pop("base", None)
    if base:
        base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base)
        data = _merge(_read_yaml(base_path, _seen + (os.path.abspath(path),)), data)
    return data


def save_config(cfg: ExperimentConfig, path: str) -> None:
    """Writes the resolved config as YAML (atomically) so the run can be reproduced from it."""
    from transfer_tf.atomic_io import write_text_atomic  # imports TensorFlow (gs:// paths)

    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
