"""What every absl binary in `pipelines/` shares: config flags, quiet logs, one-line usage errors.

A binary looks like:

    from transfer_tf import cli

    cli.define_config_flags()
    flags.DEFINE_string("model_dir", None, "Output directory.")

    def main(argv):
        cli.reject_extra_args(argv)
        cfg = cli.load_config_from_flags()
        ...

    def run():  # console-script entry point
        cli.run(main)

    if __name__ == "__main__":
        run()

Usage errors (a bad flag value, a missing file, an invalid config) print one line
`error: <what is wrong>` on stderr and exit 2; no traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

# Quiet TensorFlow's C++ logging before anything imports it; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from transfer_tf.config import ConfigError, ExperimentConfig, load_config, save_config  # noqa: E402
from transfer_tf.errors import UsageError  # noqa: E402,F401  (re-exported for binaries)

FLAGS = flags.FLAGS

USAGE_EXIT_CODE = 2


def define_config_flags(default_config: str | None = None) -> None:
    """Defines `--config=FILE` and repeatable `--set=key.sub=value`."""
    flags.DEFINE_string("config", default_config, "Experiment YAML file (see configs/).")
    flags.DEFINE_multi_string(
        "set", [], "Config override KEY=VALUE, e.g. --set=train.epochs=2 (repeatable)."
    )


def define_allow_config_change_flag() -> None:
    """Defines `--allow_config_change` (training binaries: accept a changed config on resume)."""
    flags.DEFINE_bool(
        "allow_config_change",
        False,
        "Resume a run whose resolved config differs from its model_dir/config.yaml in keys other "
        "than paths and logging/checkpoint cadence (listed in the error); the new config is saved.",
    )


def load_config_from_flags() -> ExperimentConfig:
    """Loads `--config` with the `--set` overrides applied (ConfigError on any problem)."""
    return load_config(FLAGS.config, FLAGS.set)


def write_resolved_config(cfg: ExperimentConfig, out_dir: str) -> str:
    """Writes `out_dir/config.yaml` (the resolved config) and returns its path."""
    import tensorflow as tf

    tf.io.gfile.makedirs(out_dir)
    path = os.path.join(out_dir, "config.yaml")
    save_config(cfg, path)
    return path


def require_flags(*names: str) -> None:
    """Raises UsageError for the first flag in `names` that was not given."""
    for name in names:
        value = FLAGS[name].value
        if value is None or value == "" or value == []:
            raise UsageError(f"--{name} is required")


def reject_extra_args(argv: Sequence[str]) -> None:
    """Binaries take flags only; a stray positional argument is a usage error."""
    if len(argv) > 1:
        raise UsageError(f"unexpected argument '{argv[1]}' (this binary takes flags only)")


def fail(message: str) -> None:
    """Prints `error: message` on stderr and exits with the usage exit code."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(USAGE_EXIT_CODE)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise  # unreachable: fail() exits


def _guarded(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
    def wrapper(argv: list[str]) -> object:
        try:
            return main(argv)
        except (UsageError, ConfigError) as e:
            fail(str(e))
        except FileNotFoundError as e:
            fail(f"file not found: {e.filename or e}")
        except Exception as e:
            usage = _corrupt_input_error(e)
            if usage is None:
                raise
            fail(str(usage))
        return None

    return wrapper


def _corrupt_input_error(error: Exception) -> UsageError | None:
    """A TensorFlow error caused by a corrupt record/shard, named in one line (else None)."""
    if "tensorflow" not in sys.modules:
        return None
    import tensorflow as tf

    if not isinstance(error, tf.errors.OpError):
        return None
    from transfer_tf.data.guard import corrupt_data_error

    return corrupt_data_error(error)


def run(main: Callable[[list[str]], object]) -> None:
    """Runs an absl `main` with one-line usage errors and quiet TensorFlow logging."""
    logging.set_verbosity(logging.INFO)
    app.run(_guarded(main), flags_parser=_parse_flags)
