"""Config keys that were renamed: old configs still load, old overrides say what to write.

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

from transfer_tf.config_schema import CHOICES
from transfer_tf.errors import ConfigError

# Old dotted key -> (new key in the same section, old value -> new value).
RENAMED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    # Issue 30: a policy with a name (error | skip) instead of a bool.
    "data.skip_corrupt": ("on_corrupt_record", lambda v: "skip" if v is True else "error"),
}


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
