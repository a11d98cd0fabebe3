"""Config keys that were renamed. `RENAMED`: translated, so old configs still load and only an
old override is an error naming the new key. `RENAMED_KEYS`: always an error (the learning rates
that became per 256 images: an old absolute value cannot be read as the new one).

Run dirs keep the config they were started with (`config.yaml`), so a renamed key must still
load from a file, or those runs could not resume or export. An override (`--set`) is typed now,
by a user who can use the new name: it is an error that names it.

Example:
    data = {"data": {"skip_corrupt": True}}
    translate_renamed(data)     # -> {"data": {"on_corrupt_record": "skip"}}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transfer_tf.config_schema import CHOICES, DemoConfig, PhaseConfig, TransferConfig
from transfer_tf.errors import ConfigError

# Old dotted key -> (new key in the same section, old value -> new value).
RENAMED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    # Issue 30: a policy with a name (error | skip) instead of a bool.
    "data.skip_corrupt": ("on_corrupt_record", lambda v: "skip" if v is True else "error"),
}


# Keys renamed when every learning rate in a config became per 256 images (issue 29): class ->
# {old name: new name}. Errors, not aliases: an old value was an absolute LR, and reading it as
# per 256 images would silently change the step by B/256.
RENAMED_KEYS: dict[type, dict[str, str]] = {
    PhaseConfig: {"learning_rate": "base_learning_rate"},
    TransferConfig: {"learning_rate": "base_learning_rate"},
    DemoConfig: {"scratch_learning_rate": "scratch_base_learning_rate"},
}
LR_RENAME_HINT = (
    "(per 256 images, scaled to the global batch: x B/256 for sgd, x sqrt(B/256) for adam/adamw); "
    "an old absolute value v at batch B is v*256/B (sgd) or v*sqrt(256/B) (adam/adamw)"
)


def translate_renamed(data: dict) -> None:
    """Rewrites the renamed keys of a config file's plain data in place (a new key given beside
    its old one wins). Raises ConfigError for an old value of the wrong type."""
    for dotted, (new_key, convert) in RENAMED.items():
        section, old_key = dotted.split(".")
        body = data.get(section)
        if not isinstance(body, dict) or old_key not in body:
            continue
        old_value = body.pop(old_key)
        if not isinstance(old_value, bool):
            raise ConfigError(f"config key '{dotted}': expected true or false, got {old_value!r}")
        body.setdefault(new_key, convert(old_value))


def renamed_key_error(dotted: str) -> ConfigError:
    """The error for an override that uses the old name `dotted` (a key of RENAMED)."""
    section = dotted.split(".")[0]
    new = f"{section}.{RENAMED[dotted][0]}"
    choices = " | ".join(CHOICES.get(new, ()))
    return ConfigError(f"config key '{dotted}' was renamed: use '{new}' ({choices})")
