"""Pretrain a ResNet classifier: `python -m pipelines.pretrain --config=FILE --model_dir=DIR`.

Flags override the config (`--strategy`, `--mixed_precision`, `--xla`, ... are shorthands for
`--set=train.KEY=VALUE`). Rerunning the same command after a crash resumes from the latest
checkpoint in DIR; a rerun whose config differs from DIR/config.yaml beyond paths and
logging/checkpoint cadence is an error naming the keys, unless --allow_config_change. One run
writes DIR at a time (DIR/run.lock); Ctrl-C or SIGTERM saves a checkpoint at the step reached and
prints the command that resumes (exit 130 / 143); RELIABILITY.md lists the faults handled.
"""

import json

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.distribute import cluster

FLAGS = flags.FlagValues()
cli.define_config_flags(flag_values=FLAGS)
cli.define_allow_config_change_flag(FLAGS)
cli.define_dry_run_flag(FLAGS)
cli.define_profile_steps_flag(FLAGS)
cluster.define_cluster_flags(FLAGS)
flags.DEFINE_string(
    "model_dir",
    None,
    "Run directory: config.yaml, checkpoints/, summaries/ (default: AIP_CHECKPOINT_DIR, then "
    "AIP_MODEL_DIR, as Vertex AI sets them).",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "strategy",
    None,
    ["auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"],
    "Distribution strategy (overrides train.strategy).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "tpu", None, "TPU name or grpc:// address (overrides train.tpu).", flag_values=FLAGS
)
flags.DEFINE_enum(
    "mixed_precision",
    None,
    ["auto", "bfloat16", "float16", "none"],
    "Overrides train.mixed_precision (auto: the hardware's native precision).",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "xla",
    None,
    ["auto", "true", "false"],
    "Compile the train step with XLA (overrides train.xla; auto: a cached measured probe).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "steps_per_execution", None, "Overrides train.steps_per_execution.", flag_values=FLAGS
)
flags.DEFINE_string(
    "init_checkpoint",
    None,
    "Warm start from a run dir or checkpoint prefix.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "init_weights",
    None,
    "Keras weights .h5 for the backbone (model.init_weights).",
    flag_values=FLAGS,
)

_FLAG_TO_KEY = {
    "strategy": "train.strategy",
    "tpu": "train.tpu",
    "mixed_precision": "train.mixed_precision",
    "xla": "train.xla",
    "steps_per_execution": "train.steps_per_execution",
    "init_checkpoint": "train.init_checkpoint",
    "init_weights": "model.init_weights",
}


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str | None:
    """Pretrains as the parsed flags say (`argv`: absl's, the program name first); with
    `--dry_run` returns the resolved plan as JSON instead (`training.dry_run`)."""
    cli.reject_extra_args(argv)
    cli.require_flags("config", flag_values=flag_values)
    model_dir = cli.training_model_dir(flag_values)
    profile = cli.profile_steps(flag_values)
    overrides = list(flag_values.set)
    for flag, key in _FLAG_TO_KEY.items():
        value = flag_values[flag].value
        if value is not None:
            # Strings JSON-quoted so paths with ':' stay strings in the YAML parse of --set.
            if isinstance(value, bool):
                text = str(value).lower()
            elif flag == "xla":
                text = value  # true | false | auto, parsed by YAML as bool or string
            elif isinstance(value, int):
                text = str(value)
            else:
                text = json.dumps(value)
            overrides.append(f"{key}={text}")
    from transfer_tf.config import load_config
    from transfer_tf.training.pretrain import run_pretraining

    cfg = load_config(flag_values.config, overrides)
    # TF_CONFIG must be in place before the strategy is built; checks fail fast, in one line.
    from transfer_tf.distribute.preflight import check_distributed_config

    cluster_info = cluster.configure_cluster_from_flags(flag_values)
    check_distributed_config(cfg, cluster_info)
    if flag_values.dry_run:
        from transfer_tf.training.dry_run import pretraining_plan

        return json.dumps(pretraining_plan(cfg, model_dir, cluster_info), indent=1)
    logs = run_pretraining(
        cfg,
        model_dir,
        allow_config_change=flag_values.allow_config_change,
        profile_steps=profile,
    )
    logging.info("done: %s", logs)
    return None


def main(argv: list[str]) -> None:
    out = run_from_flags(FLAGS, argv)
    if out is not None:
        print(out)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
