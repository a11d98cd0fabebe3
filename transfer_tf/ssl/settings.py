"""Checks of the `ssl` config section (run by `config.load_config` after the other sections).

Kept beside the SSL code rather than in config.py: it knows which data options a two-view run
ignores, and which `ssl` keys only one method reads (set under the other method, an error naming
`ssl.method`). It imports only the schema and the error type, so the config loader can call it.

Example:
    validate_ssl(cfg)   # ConfigError: config keys 'ssl.method' ('simclr') and
                        #   'data.mixup_alpha' (0.2) conflict: ...
"""

from __future__ import annotations

from transfer_tf.config_schema import ExperimentConfig, SSLConfig
from transfer_tf.errors import ConfigError

SSL_METHODS = ("simclr", "byol")
# What each method adds to a run's checkpoint beside the classifier (`model`): the objects a
# fine-tuning restore drops, exactly (transfer/restore.py). ssl/methods.py uses these names.
CHECKPOINT_OBJECTS: dict[str, tuple[str, ...]] = {
    "simclr": ("ssl_projection",),
    "byol": ("ssl_projection", "ssl_predictor", "ssl_target_encoder", "ssl_target_projection"),
}


def is_self_supervised(cfg: ExperimentConfig) -> bool:
    """Whether pretraining uses an SSL objective (two views, labels ignored)."""
    return cfg.ssl.method in SSL_METHODS


def _conflicts(cfg: ExperimentConfig) -> list[tuple[str, object, str]]:
    """(key, value, why) of every set option that a two-view run would silently ignore."""
    d = cfg.data
    views = "the two-view pipeline makes its own views (ssl.views, ssl.color_strength)"
    out = []
    if d.mixup_alpha > 0:
        out.append(("data.mixup_alpha", d.mixup_alpha, "there are no labels to mix"))
    if d.cutmix_alpha > 0:
        out.append(("data.cutmix_alpha", d.cutmix_alpha, "there are no labels to mix"))
    if d.augment_policy != "none":
        out.append(("data.augment_policy", d.augment_policy, views))
    if any(v > 0 for v in d.color_jitter):
        out.append(("data.color_jitter", list(d.color_jitter), views))
    if d.random_rotation_degrees > 0:
        out.append(("data.random_rotation_degrees", d.random_rotation_degrees, views))
    if cfg.train.ema_decay > 0:
        out.append(
            ("train.ema_decay", cfg.train.ema_decay, "weight EMA is not wired for SSL methods")
        )
    return out


# Keys only one method reads (the other one's runs would accept and ignore them).
_METHOD_KEYS = {
    "temperature": "simclr",  # NT-Xent's; BYOL has no negatives
    "momentum_base": "byol",  # the target network's
    "predictor_widths": "byol",  # the online predictor's
}


def _unread_ssl_key(cfg: ExperimentConfig) -> tuple[str, object, str] | None:
    """(key, value, why) of an `ssl.*` key `cfg` sets (not its default) that only the other
    self-supervised method reads. (With `ssl.method: supervised` the section is left alone: a
    fine-tuning config derived from an SSL recipe keeps that recipe's keys, read by the run that
    pretrained with it.)"""
    if not is_self_supervised(cfg):
        return None
    default = SSLConfig()
    for name, owner in _METHOD_KEYS.items():
        value = getattr(cfg.ssl, name)
        if owner != cfg.ssl.method and value != getattr(default, name):
            return f"ssl.{name}", value, f"only {owner} reads it"
    return None


def validate_ssl(cfg: ExperimentConfig) -> None:
    """Raises ConfigError naming the key for an invalid `ssl` value or a conflicting option."""
    s = cfg.ssl
    if s.temperature <= 0:
        raise ConfigError(f"config key 'ssl.temperature': expected > 0, got {s.temperature}")
    if not 0.0 <= s.momentum_base <= 1.0:
        raise ConfigError(f"config key 'ssl.momentum_base': expected 0..1, got {s.momentum_base}")
    for key in ("projection_widths", "predictor_widths"):
        widths = getattr(s, key)
        if any(w <= 0 for w in widths):
            raise ConfigError(f"config key 'ssl.{key}': expected positive widths, got {widths}")
    if not s.predictor_widths:
        raise ConfigError("config key 'ssl.predictor_widths': expected at least one width")
    if s.color_strength < 0:
        raise ConfigError(f"config key 'ssl.color_strength': expected >= 0, got {s.color_strength}")
    lo, hi = s.blur_sigma
    if not 0.0 < lo <= hi:
        raise ConfigError(
            f"config key 'ssl.blur_sigma': expected 0 < min <= max (pixels), got {[lo, hi]}"
        )
    for key in ("blur_reference_size", "knn_k", "knn_train_examples"):
        if getattr(s, key) < 0:
            raise ConfigError(f"config key 'ssl.{key}': expected >= 0, got {getattr(s, key)}")
    if s.knn_temperature <= 0:
        raise ConfigError(
            f"config key 'ssl.knn_temperature': expected > 0, got {s.knn_temperature}"
        )
    if (
        s.method == "byol"
        and s.projection_widths
        and (s.projection_widths[-1] != s.predictor_widths[-1])
    ):
        raise ConfigError(
            f"config keys 'ssl.projection_widths' ({s.projection_widths}) and "
            f"'ssl.predictor_widths' ({s.predictor_widths}) conflict: BYOL regresses the "
            "predictor's output onto the target's projection, so their last widths must match"
        )
    unread = _unread_ssl_key(cfg)
    if unread:
        key, value, why = unread
        value = list(value) if isinstance(value, (list, tuple)) else value
        raise ConfigError(
            f"config keys 'ssl.method' ({s.method!r}) and '{key}' ({value!r}) conflict: {why}; "
            f"unset '{key}'"
        )
    if not is_self_supervised(cfg):
        return
    for key, value, why in _conflicts(cfg):
        raise ConfigError(
            f"config keys 'ssl.method' ({s.method!r}) and '{key}' ({value!r}) conflict: {why}; "
            f"unset '{key}' for self-supervised pretraining"
        )
