"""Fine-tune a pretrained backbone with a freeze/unfreeze schedule.

    python -m pipelines.finetune --config=configs/coco_multilabel_resnet50.yaml \
        --init_checkpoint=SRC --model_dir=DIR [--preset=lp_ft --set=train.epochs=12 ...]

SRC is a pretraining model_dir (its latest checkpoint), a Keras weights file (.h5 / .weights.h5,
e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5) or an exported SavedModel; only the
backbone is restored, the head is new. Rerunning the same command after a crash resumes in the
phase it stopped in (a changed config is an error naming the keys, unless --allow_config_change).
`python -m pipelines.evaluate --model_dir=DIR` evaluates the result.

--preset replaces the config's `transfer.phases` (it also sets `transfer.phases=[]`); its budget
is train.train_steps or train.epochs. `--set=transfer.preset=...` alone on a config with phases
is an error naming both keys.
"""

import json

from absl import flags, logging

from transfer_tf import cli
from transfer_tf.distribute import cluster

cli.define_config_flags()
cli.define_allow_config_change_flag()
cluster.define_cluster_flags()
flags.DEFINE_string("model_dir", None, "Run directory: config.yaml, checkpoints/, summaries/.")
flags.DEFINE_string(
    "init_checkpoint",
    None,
    "Backbone source: pretraining model_dir, Keras .h5/.weights.h5, or SavedModel (export) dir. "
    "Overrides transfer.init_checkpoint; omit both to train from scratch.",
)
flags.DEFINE_string(
    "preset",
    None,
    "Overrides transfer.preset (linear_probe|lp_ft|gradual_unfreeze) and clears transfer.phases; "
    "budget: train.train_steps or train.epochs.",
)
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cli.require_flags("config", "model_dir")
    overrides = list(FLAGS.set)
    if FLAGS.preset is not None:
        overrides += [f"transfer.preset={json.dumps(FLAGS.preset)}", "transfer.phases=[]"]
    from transfer_tf.config import load_config
    from transfer_tf.transfer.finetune import run_finetuning

    cfg = load_config(FLAGS.config, overrides)
    # TF_CONFIG must be in place before the strategy is built; checks fail fast, in one line.
    from transfer_tf.distribute.preflight import check_distributed_config

    check_distributed_config(cfg, cluster.configure_cluster_from_flags())
    result = run_finetuning(
        cfg,
        FLAGS.model_dir,
        init_checkpoint=FLAGS.init_checkpoint,
        allow_config_change=FLAGS.allow_config_change,
    )
    metrics = {k: v for k, v in result["eval"].items() if not isinstance(v, list)}
    logging.info("done at global step %d: %s", result["global_step"], metrics)
    summary = {"global_step": result["global_step"], **metrics}
    summary["weights_sha256"] = result["weights_sha256"]
    print(json.dumps(summary))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
