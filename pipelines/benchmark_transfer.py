"""Transfer benchmark: pretrained + schedule vs scratch vs linear probe, equal step budget.

    python -m pipelines.benchmark_transfer --work_dir=/tmp/bench_transfer
    python -m pipelines.benchmark_transfer --data=photos --photo_dir=/tmp/photos \
        --work_dir=/tmp/bench_photos --seeds=0,1,2 --markdown

--data=synthetic (default) generates the shape x colour ImageNet-like and COCO-like sets.
--data=photos cuts an ImageNet-layout set and a COCO-layout multi-object set out of real
photographs (--photo_dir; or --photo_wheel=a.whl,b.whl to take the sample photographs out of
downloaded scikit-image / matplotlib wheels into --photo_dir first), builds their shards with the
real builders, pretrains with configs/imagenet_resnet50.yaml's recipe and compares the shipped
configs/coco_multilabel_resnet50.yaml recipe (only data and runtime overridden) with a linear
probe, a full fine-tune and scratch at the shipped recipe's step budget, once per seed
(transfer_tf/benchmarks/transfer_photos.py). --arm=NAME:KEY=V;KEY=V adds a variant of the shipped
recipe, --arm_config=NAME:FILE another transfer config (e.g. the Adam one); arms named scratch_*
start from random weights. Pretraining runs the recipe's own LR (--pretrain_config,
--pretrain_peak_lr to change); --finetune_image_size, --budget_factor and
--extra_pretrain_photo_dir vary the transfer's resolution, its length and the pretraining source.
Prints one JSON line per seed, then one summary line (mean ± std per arm); --markdown also prints
the BENCHMARKS.md table. Data and runs under --work_dir are reused on a rerun.
"""

import dataclasses
import json
import os

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "work_dir", "/tmp/bench_transfer", "Scratch folder for data and runs.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "data", "synthetic", ["synthetic", "photos"], "Which benchmark data.", flag_values=FLAGS
)
flags.DEFINE_string(
    "photo_dir", "", "--data=photos: folder of *.jpg/*.jpeg/*.png photographs.", flag_values=FLAGS
)
flags.DEFINE_list(
    "photo_wheel", [], "Wheels to extract the sample photographs from first.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "image_size", None, "Training/eval image side (synthetic 48, photos 32).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "pretrain_steps", 600, "--data=synthetic: pretraining steps.", flag_values=FLAGS
)
flags.DEFINE_float("pretrain_epochs", 6.0, "--data=photos: pretraining epochs.", flag_values=FLAGS)
flags.DEFINE_integer(
    "budget_steps",
    None,
    "--data=synthetic: steps of EACH transfer run (default 200). Photos: always the shipped "
    "recipe's length on the data.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("batch_size", 32, "Global batch size of every run.", flag_values=FLAGS)
flags.DEFINE_string("model", "resnet18", "Backbone (model.name).", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0"], "--data=photos: one comparison per seed.", flag_values=FLAGS)
flags.DEFINE_integer(
    "train_per_class", 60, "--data=photos: pretraining images per photograph.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "val_per_class", 10, "--data=photos: pretraining val images per photograph.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "coco_classes", 8, "--data=photos: photographs that are COCO objects.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "coco_train_images", 240, "--data=photos: COCO-layout train images.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "coco_val_images", 120, "--data=photos: COCO-layout val images.", flag_values=FLAGS
)
flags.DEFINE_list(
    "arms",
    None,
    "--data=photos: subset of shipped,linear_probe,full_finetune,scratch.",
    flag_values=FLAGS,
)
flags.DEFINE_multi_string(
    "arm", [], "--data=photos: extra arm NAME:KEY=V;KEY=V (shipped + overrides).", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "arm_config",
    [],
    "--data=photos: extra arm NAME:CONFIG.yaml, another transfer recipe on the same data and "
    "runtime (e.g. adam:configs/coco_multilabel_resnet50_adam.yaml).",
    flag_values=FLAGS,
)
flags.DEFINE_multi_string(
    "pretrain_set", [], "--data=photos: overrides of the pretraining config.", flag_values=FLAGS
)
flags.DEFINE_string(
    "pretrain_config",
    "",
    "--data=photos: pretraining recipe (default configs/imagenet_resnet50.yaml).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "pretrain_peak_lr",
    None,
    "--data=photos: peak pretraining LR at --batch_size (default: the recipe's own "
    "base_learning_rate, per 256 images, scaled to the batch).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "finetune_image_size",
    None,
    "--data=photos: side of the transfer runs (default --image_size, the pretraining side).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "extra_pretrain_photo_dir",
    "",
    "--data=photos: more photographs that only pretraining sees (extra classes; the COCO-layout "
    "task stays the same).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "budget_factor",
    1.0,
    "--data=photos: multiplies the shipped recipe's phase lengths (every arm trains that budget).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "mixed_precision",
    "none",
    "--data=photos: train.mixed_precision of all runs.",
    flag_values=FLAGS,
)
flags.DEFINE_bool("markdown", False, "Also print the markdown table.", flag_values=FLAGS)


def _photos(flag_values: flags.FlagValues) -> None:
    """The --data=photos comparison; prints a JSON line per seed, the summary, the table."""
    from transfer_tf.benchmarks import transfer_photos as pb
    from transfer_tf.datagen import photos as photo_sets

    if flag_values.photo_wheel:
        photo_sets.extract_wheel_photos(flag_values.photo_wheel, flag_values.photo_dir)
    extra = {}
    for spec in flag_values.arm:
        name, _, overrides = spec.partition(":")
        if not name or not overrides:
            raise cli.UsageError(f"--arm={spec}: expected NAME:KEY=V;KEY=V")
        extra[name] = tuple(o for o in overrides.split(";") if o)
    arm_configs = {}
    for spec in flag_values.arm_config:
        name, _, path = spec.partition(":")
        if not name or not path:
            raise cli.UsageError(f"--arm_config={spec}: expected NAME:CONFIG.yaml")
        if not os.path.isfile(path):
            raise cli.UsageError(f"--arm_config={spec}: no file {path}")
        arm_configs[name] = path
    if flag_values.pretrain_config and not os.path.isfile(flag_values.pretrain_config):
        raise cli.UsageError(f"--pretrain_config={flag_values.pretrain_config}: no such file")
    base = pb.PhotoBenchmarkSize()
    size = dataclasses.replace(
        base,
        model=flag_values.model,
        image_size=flag_values.image_size or base.image_size,
        batch_size=flag_values.batch_size,
        pretrain_epochs=flag_values.pretrain_epochs,
        train_per_class=flag_values.train_per_class,
        val_per_class=flag_values.val_per_class,
        coco_classes=flag_values.coco_classes,
        coco_train_images=flag_values.coco_train_images,
        coco_val_images=flag_values.coco_val_images,
        mixed_precision=flag_values.mixed_precision,
        arms=tuple(flag_values.arms) if flag_values.arms is not None else pb.ARMS,
        extra_arms=extra,
        extra_arm_configs=arm_configs,
        pretrain_overrides=tuple(flag_values.pretrain_set),
        pretrain_config=flag_values.pretrain_config,
        pretrain_peak_lr=flag_values.pretrain_peak_lr,
        finetune_image_size=flag_values.finetune_image_size,
        budget_factor=flag_values.budget_factor,
        extra_pretrain_photo_dir=flag_values.extra_pretrain_photo_dir,
    )
    results = []
    for seed in flag_values.seeds:
        result = pb.compare_on_photos(
            flag_values.work_dir, flag_values.photo_dir, dataclasses.replace(size, seed=int(seed))
        )
        print(json.dumps(result), flush=True)
        results.append(result)
    from transfer_tf.benchmarks.transfer_photos_summary import markdown_table, summarize

    summary = summarize(results)
    print(json.dumps({"summary": summary}), flush=True)
    if flag_values.markdown:
        print(markdown_table(summary))


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str | None:
    """Runs the benchmark as the parsed flags say (`argv`: absl's, the program name first).

    --data=synthetic returns the binary's stdout: the result as one JSON line (then the table
    with --markdown). --data=photos prints its lines itself and returns None: a line per seed
    as soon as that seed's comparison ends (each takes long), then the summary.
    """
    cli.reject_extra_args(argv)
    if flag_values.data == "photos":
        cli.require_flags("photo_dir", flag_values=flag_values)
        _photos(flag_values)
        return None
    from transfer_tf.benchmarks.transfer import BenchmarkSize, compare_transfer, markdown_table

    size = dataclasses.replace(
        BenchmarkSize(),
        image_size=flag_values.image_size or 48,
        pretrain_steps=flag_values.pretrain_steps,
        budget_steps=flag_values.budget_steps or 200,
        batch_size=flag_values.batch_size,
        model=flag_values.model,
    )
    result = compare_transfer(flag_values.work_dir, size)
    lines = [json.dumps(result)]
    if flag_values.markdown:
        lines.append(markdown_table(result))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    stdout = run_from_flags(FLAGS, argv)
    if stdout is not None:
        print(stdout, flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
