"""Platform conventions: where a job writes when a cloud platform, not a flag, says so.

Vertex AI custom jobs with a `baseOutputDirectory` set (CustomJobSpec docs) pass
  AIP_MODEL_DIR           = <base>/model/        the model artifacts (our export)
  AIP_CHECKPOINT_DIR      = <base>/checkpoints/  checkpoints (our run directory)
  AIP_TENSORBOARD_LOG_DIR = <base>/logs/         what Vertex AI TensorBoard uploads
A flag always wins over the environment; the run log says which one was used, so a run that
writes somewhere unexpected can be traced to its source.

Example:
    model_dir, source = output_dir(FLAGS.model_dir, "--model_dir", TRAINING_DIR_VARS)
    summaries = summary_dir("runs/r50")   # AIP_TENSORBOARD_LOG_DIR when set
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from absl import logging

from transfer_tf.errors import UsageError

# A training run directory holds checkpoints/ (and config.yaml beside them): the platform's
# checkpoint dir first, its model dir when only that one is given.
TRAINING_DIR_VARS = ("AIP_CHECKPOINT_DIR", "AIP_MODEL_DIR")
EXPORT_DIR_VARS = ("AIP_MODEL_DIR",)
TENSORBOARD_VAR = "AIP_TENSORBOARD_LOG_DIR"
# Kubernetes' `$(NAME)` reference in container args; `$$(NAME)` stays literal.
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def output_dir(
    flag_value: str | None,
    flag: str,
    env_vars: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The directory a job writes: `flag_value` when given, else the first of `env_vars` set.

    Returns (path, where it came from: the flag or the variable's name); logs the choice.
    Raises:
      UsageError: neither the flag nor any of the variables is set.
    """
    env = os.environ if environ is None else environ
    if flag_value:
        ignored = [name for name in env_vars if env.get(name)]
        if ignored:
            logging.info("%s=%s (the flag wins over %s)", flag, flag_value, ", ".join(ignored))
        return flag_value, flag
    for name in env_vars:
        value = env.get(name, "").strip()
        if value:
            path = value.rstrip("/") or value
            logging.info("%s not given: writing to %s from %s", flag, path, name)
            return path, name
    raise UsageError(f"{flag} is required (or set {' / '.join(env_vars)}, as Vertex AI does)")


def summary_dir(write_dir: str, environ: Mapping[str, str] | None = None) -> str:
    """Where TensorBoard summaries go: AIP_TENSORBOARD_LOG_DIR when the platform sets it (Vertex
    AI TensorBoard uploads only that folder), else `write_dir/summaries`."""
    env = os.environ if environ is None else environ
    platform = env.get(TENSORBOARD_VAR, "").strip()
    return platform.rstrip("/") if platform else os.path.join(write_dir, "summaries")


def expand_references(arg: str, environ: Mapping[str, str] | None = None) -> str:
    """Expands `$(NAME)` in one argument from the environment, as Kubernetes does for container
    args (an unset NAME stays as written; `$$` is a literal `$`), so one job spec runs the same
    under GKE (kubelet expands), Vertex AI and `docker run` (the image's entry point expands)."""
    env = os.environ if environ is None else environ

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(one, arg)
