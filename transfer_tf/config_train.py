"""Value checks of the `train` / `transfer` optimizer and runtime keys (`config._validate` raises
the first `train_problem` as a ConfigError).

Example:
    train_problem(cfg)   # None, or "config keys 'deterministic' (true) and 'train.xla' ..."
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transfer_tf.config_schema import ExperimentConfig


def train_problem(cfg: ExperimentConfig) -> str | None:
    """The first problem of `cfg`'s optimizer (both sections) and XLA keys, or None."""
    xla = cfg.train.xla
    if isinstance(xla, str) and xla != "auto":
        return f"config key 'train.xla': expected true or false (or 'auto'), got {xla!r}"
    if cfg.deterministic and xla is True:
        # TF refuses the XLA step under op determinism: it used to die at step 1 (a traceback).
        return (
            "config keys 'deterministic' (true) and 'train.xla' (true) conflict: XLA has no "
            "deterministic implementation of every training op (MaxPool's gradient); set "
            "train.xla: false, or auto (off in deterministic mode)"
        )
    for section in ("train", "transfer"):
        sub = getattr(cfg, section)
        wd = sub.weight_decay
        if wd < 0 and wd != -1:
            return (
                f"config key '{section}.weight_decay': expected -1 (the optimizer's default) or a "
                f"value >= 0, got {wd}"
            )
        if sub.optimizer == "adamw" and 0 < wd < 1e-3:
            return (
                f"config key '{section}.weight_decay': {wd} with optimizer adamw is decoupled decay "
                "multiplied by the learning rate, i.e. no decay at all; use ~0.01-0.1 (-1 = 0.05) "
                "or 0"
            )
        if not 0.0 <= sub.ema_decay < 1.0:
            return f"config key '{section}.ema_decay': expected 0 <= value < 1"
    return None
