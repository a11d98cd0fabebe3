"""Pretrain a ResNet classifier: `python -m pipelines.pretrain --config=FILE --model_dir=DIR`.

Flags override the config (`--strategy`, `--mixed_precision`, `--xla`, ... are shorthands for
`--set=train.KEY=VALUE`). Rerunning the same command after a crash resumes from the latest
checkpoint in DIR; a rerun whose config differs from DIR/config.yaml beyond paths and
logging/checkpoint cadence is an error naming the keys, unless --allow_config_change.
"""

import json

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.distribute import cluster

cli.define_config_flags()
cli.define_allow_config_change_flag()
cluster.define_cluster_flags()
flags.DEFINE_string("model_dir", None, "Run directory: config.yaml, checkpoints/, summaries/.")
flags.DEFINE_enum(
    "strategy",
    None,
    ["auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"],
    "Distribution strategy (overrides train.strategy).",
)
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (overrides train.tpu).")
flags.DEFINE_enum(
    "mixed_precision",
    None,
    ["auto", "bfloat16", "float16", "none"],
    "Overrides train.mixed_precision (auto: the hardware's native precision).",
)
flags.DEFINE_enum(
    "xla",
    None,
    ["auto", "true", "false"],
    "Compile the train step with XLA (overrides train.xla; auto: a cached measured probe).",
)
flags.DEFINE_integer("steps_per_execution", None, "Overrides train.steps_per_execution.")
flags.DEFINE_string("init_checkpoint", None, "Warm start from a run dir or checkpoint prefix.")
flags.DEFINE_string(
    "init_weights", None, "Keras weights .h5 for the backbone (model.init_weights)."
)
FLAGS = flags.FLAGS

_FLAG_TO_KEY = {
    "strategy": "train.strategy",
    "tpu": "train.tpu",
    "mixed_precision": "train.mixed_precision",
    "xla": "train.xla",
    "steps_per_execution": "train.steps_per_execution",
    "init_checkpoint": "train.init_checkpoint",
    "init_weights": "model.init_weights",
}


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("config", "model_dir")
    overrides = list(FLAGS.set)
    for flag, key in _FLAG_TO_KEY.items():
        value = FLAGS[flag].value
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

    cfg = load_config(FLAGS.config, overrides)
    # TF_CONFIG must be in place before the strategy is built; checks fail fast, in one line.
    from transfer_tf.distribute.preflight import check_distributed_config

    check_distributed_config(cfg, cluster.configure_cluster_from_flags())
    logs = run_pretraining(cfg, FLAGS.model_dir, allow_config_change=FLAGS.allow_config_change)
    logging.info("done: %s", logs)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
