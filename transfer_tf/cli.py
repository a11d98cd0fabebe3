"""What every absl binary in `pipelines/` shares: config flags, quiet logs, one-line usage errors.

A binary defines its flags on its own `FlagValues`, so that several binaries can be imported
into one process (the demo runs their jobs in-process), and keeps its flags -> library mapping
in one function that its `main` and the demo both call:

    from transfer_tf import cli

    FLAGS = flags.FlagValues()
    cli.define_config_flags(flag_values=FLAGS)
    flags.DEFINE_string("model_dir", None, "Output directory.", flag_values=FLAGS)

    def run_from_flags(flag_values, argv):  # argv: absl's, the program name first
        cli.reject_extra_args(argv)
        cfg = cli.load_config_from_flags(flag_values)
        ...
        return "what the binary prints on stdout"  # or None

    def main(argv):
        print(run_from_flags(FLAGS, argv))

    def run():  # console-script entry point
        cli.run(main, FLAGS)

    if __name__ == "__main__":
        run()

The demo parses a copy of `FLAGS` with a stage's arguments and calls `run_from_flags` on it
(transfer_tf/demo/inprocess.py). A binary that must print while it runs (a line per result of a
long benchmark) prints those lines itself and returns None. The helpers' `flag_values` defaults
to absl's global `flags.FLAGS`.

Usage errors (a bad flag value, a missing file, an invalid config, an unwritable output) print one
line `error: <what is wrong>` on stderr and exit 2; no traceback. A training run stopped by
SIGINT/SIGTERM (`training.signals.RunInterrupted`) prints where its checkpoint is and the command
that resumes, and exits 130 / 143.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence

# Quiet TensorFlow's C++ logging before anything imports it; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from transfer_tf.config import ConfigError, ExperimentConfig, load_config, save_config  # noqa: E402
from transfer_tf.errors import UsageError  # noqa: E402,F401  (re-exported for binaries)
from transfer_tf.io_errors import FULL_OR_READ_ONLY, write_error_reason  # noqa: E402
from transfer_tf.training import signals  # noqa: E402
from transfer_tf.training.signals import RunInterrupted  # noqa: E402

FLAGS = flags.FLAGS

USAGE_EXIT_CODE = 2


def define_config_flags(
    default_config: str | None = None, flag_values: flags.FlagValues = FLAGS
) -> None:
    """Defines `--config=FILE` and repeatable `--set=key.sub=value` on `flag_values`."""
    flags.DEFINE_string(
        "config", default_config, "Experiment YAML file (see configs/).", flag_values=flag_values
    )
    flags.DEFINE_multi_string(
        "set",
        [],
        "Config override KEY=VALUE, e.g. --set=train.epochs=2 (repeatable).",
        flag_values=flag_values,
    )


def define_allow_config_change_flag(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines `--allow_config_change` (training binaries: accept a changed config on resume)."""
    flags.DEFINE_bool(
        "allow_config_change",
        False,
        "Resume a run whose resolved config differs from its model_dir/config.yaml in keys other "
        "than paths and logging/checkpoint cadence (listed in the error); the new config is saved.",
        flag_values=flag_values,
    )


def define_dry_run_flag(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines `--dry_run` (training binaries: print the resolved plan, train nothing)."""
    flags.DEFINE_bool(
        "dry_run",
        False,
        "Resolve the config, the data check (local shards), the strategy plan and the step plan, "
        "print them as JSON and exit 0: no model, no training, nothing written.",
        flag_values=flag_values,
    )


def define_profile_steps_flag(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines `--profile_steps=A,B` (training binaries: a TensorBoard profile of those steps)."""
    flags.DEFINE_string(
        "profile_steps",
        None,
        "A,B: write a TensorBoard profile (Profile tab) of global steps A..B into the run's "
        "summaries folder (chief only).",
        flag_values=flag_values,
    )


def profile_steps(flag_values: flags.FlagValues = FLAGS) -> tuple[int, int] | None:
    """`--profile_steps` as (A, B); UsageError unless it is two integers 0 <= A < B."""
    text = flag_values.profile_steps
    if not text:
        return None
    parts = text.split(",")
    try:
        start, stop = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        start, stop = None, None
    if start is None or not 0 <= start < stop:
        raise UsageError(f"--profile_steps: expected A,B (global steps, 0 <= A < B), got {text!r}")
    return start, stop


def training_model_dir(flag_values: flags.FlagValues = FLAGS) -> str:
    """`--model_dir`, else the platform's AIP_CHECKPOINT_DIR / AIP_MODEL_DIR (`cloud_env`; the
    log says which); UsageError when none is set."""
    from transfer_tf.cloud_env import TRAINING_DIR_VARS, output_dir

    return output_dir(flag_values.model_dir, "--model_dir", TRAINING_DIR_VARS)[0]


def load_config_from_flags(flag_values: flags.FlagValues = FLAGS) -> ExperimentConfig:
    """Loads `--config` with the `--set` overrides applied (ConfigError on any problem)."""
    return load_config(flag_values.config, flag_values.set)


def write_resolved_config(cfg: ExperimentConfig, out_dir: str) -> str:
    """Writes `out_dir/config.yaml` (the resolved config) and returns its path."""
    import tensorflow as tf

    tf.io.gfile.makedirs(out_dir)
    path = os.path.join(out_dir, "config.yaml")
    save_config(cfg, path)
    return path


def require_flags(*names: str, flag_values: flags.FlagValues = FLAGS) -> None:
    """Raises UsageError for the first flag in `names` that was not given."""
    for name in names:
        value = flag_values[name].value
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


def resume_command(argv: Sequence[str]) -> str:
    """The shell command that reruns this binary with the same flags (`python -m pipelines.X`
    for a binary started as a module, else its own name)."""
    prog = argv[0] if argv else "python"
    folder = os.path.basename(os.path.dirname(os.path.abspath(prog)))
    if prog.endswith(".py") and folder == "pipelines":
        head = ["python", "-m", f"pipelines.{os.path.basename(prog)[:-3]}"]
    elif prog.startswith("pipelines."):  # run in-process under its module name
        head = ["python", "-m", prog]
    else:
        head = [prog]
    return shlex.join([*head, *argv[1:]])


def _interrupted(error: RunInterrupted) -> None:
    """Says where the stopped run's checkpoint is and how to resume; exits 128 + signal."""
    sys.stderr.write(f"{error}\n")
    if error.checkpoint:
        sys.stderr.write(f"resume with: {resume_command(sys.argv)}\n")
    sys.stderr.flush()
    sys.exit(error.exit_code)


def _guarded(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
    def wrapper(argv: list[str]) -> object:
        try:
            return main(argv)
        except (UsageError, ConfigError) as e:
            fail(str(e))
        except FileNotFoundError as e:
            fail(f"file not found: {e.filename or e}")
        except RunInterrupted as e:
            _interrupted(e)
        except KeyboardInterrupt:  # outside a training loop: nothing to save
            sys.stderr.write("interrupted\n")
            sys.exit(signals.exit_code(signal.SIGINT))
        except Exception as e:
            reason = write_error_reason(e)
            if reason in FULL_OR_READ_ONLY:  # a write no code path expected: still one line
                where = getattr(e, "filename", None)
                fail(f"cannot write '{where}': {reason}" if where else f"write failed: {reason}")
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


def _add_to_global_flags(flag_values: flags.FlagValues) -> None:
    """Makes absl's global parser (`--helpfull`, `--flagfile`, `--verbosity`...) own the binary's
    flags too: parsing the global flags then sets the values `flag_values` reads."""
    for name in flag_values:
        if name not in FLAGS or FLAGS[name] is not flag_values[name]:
            FLAGS[name] = flag_values[name]  # DuplicateFlagError if a global flag has that name
    # --help/--helpfull list the flags under their defining modules (the binary's first).
    for module, defined in flag_values.flags_by_module_dict().items():
        for flag in defined:
            FLAGS.register_flag_by_module(module, flag)


def run(main: Callable[[list[str]], object], flag_values: flags.FlagValues = FLAGS) -> None:
    """Runs an absl `main` with one-line usage errors and quiet TensorFlow logging.

    `flag_values`: the binary's own flags, parsed together with absl's global ones.
    """
    logging.set_verbosity(logging.INFO)
    if flag_values is not FLAGS:
        _add_to_global_flags(flag_values)

    def parse(argv: list[str]) -> list[str]:
        argv = _parse_flags(argv)
        flag_values.mark_as_parsed()
        return argv

    app.run(_guarded(main), flags_parser=parse)
