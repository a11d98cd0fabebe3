"""Fine-tune a pretrained backbone with a freeze/unfreeze schedule.

    python -m pipelines.finetune --config=configs/coco_multilabel_resnet50.yaml \
        --init_checkpoint=SRC --model_dir=DIR [--preset=lp_ft --set=train.epochs=12 ...]

SRC is a pretraining model_dir (its latest checkpoint; RUN/checkpoints/ckpt-N picks another), a
Keras weights file (.h5 / .weights.h5, e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)
or an exported SavedModel; only the backbone is restored, the head is new. Rerunning the same
command after a crash resumes in the phase it stopped in (a changed config is an error naming the
keys, unless --allow_config_change); Ctrl-C or SIGTERM saves a checkpoint first.
`python -m pipelines.evaluate --model_dir=DIR` evaluates the result.

--preset replaces the config's `transfer.phases` (it also sets `transfer.phases=[]`); its budget
is train.train_steps or train.epochs. `--set=transfer.preset=...` alone on a config with phases
is an error naming both keys.
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
flags.DEFINE_string(
    "init_checkpoint",
    None,
    "Backbone source: pretraining model_dir (or one checkpoint of it, MODEL_DIR/checkpoints/"
    "ckpt-N), Keras .h5/.weights.h5, or SavedModel (export) dir. "
    "Overrides transfer.init_checkpoint; omit both to train from scratch.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "preset",
    None,
    "Overrides transfer.preset (linear_probe|lp_ft|gradual_unfreeze) and clears transfer.phases; "
    "budget: train.train_steps or train.epochs.",
    flag_values=FLAGS,
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Fine-tunes as the parsed flags say (`argv`: absl's, the program name first).

    Returns the binary's stdout: one JSON line, the final step, eval metrics and weights digest
    (with `--dry_run`: the resolved plan, `training.dry_run`).
    """
    cli.reject_extra_args(argv)
    cli.require_flags("config", flag_values=flag_values)
    model_dir = cli.training_model_dir(flag_values)
    profile = cli.profile_steps(flag_values)
    overrides = list(flag_values.set)
    if flag_values.preset is not None:
        overrides += [f"transfer.preset={json.dumps(flag_values.preset)}", "transfer.phases=[]"]
    from transfer_tf.config import load_config
    from transfer_tf.transfer.finetune import run_finetuning

    cfg = load_config(flag_values.config, overrides)
    # TF_CONFIG must be in place before the strategy is built; checks fail fast, in one line.
    from transfer_tf.distribute.preflight import check_distributed_config

    cluster_info = cluster.configure_cluster_from_flags(flag_values)
    check_distributed_config(cfg, cluster_info)
    if flag_values.dry_run:
        from transfer_tf.training.dry_run import finetuning_plan

        plan = finetuning_plan(cfg, model_dir, cluster_info, flag_values.init_checkpoint)
        return json.dumps(plan, indent=1)
    result = run_finetuning(
        cfg,
        model_dir,
        init_checkpoint=flag_values.init_checkpoint,
        allow_config_change=flag_values.allow_config_change,
        profile_steps=profile,
    )
    metrics = {k: v for k, v in result["eval"].items() if not isinstance(v, list)}
    logging.info("done at global step %d: %s", result["global_step"], metrics)
    summary = {"global_step": result["global_step"], **metrics}
    summary["weights_sha256"] = result["weights_sha256"]
    return json.dumps(summary)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv))


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
