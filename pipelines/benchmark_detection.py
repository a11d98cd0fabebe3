"""Detection benchmark: RetinaNet from the pretrained backbone vs from scratch, equal step budget,
plus detection training images/s (transfer_tf/benchmarks/detection.py).

    python -m pipelines.benchmark_detection --work_dir=/tmp/bench_det --markdown

Generates the shape x colour ImageNet-like set and COCO-like scenes with exact boxes, builds their
shards with the real builders, pretrains a ResNet, trains RetinaNet both ways with
`run_finetuning` and scores them with COCOeval on the val split. Prints one JSON line (AP, AP50,
AP75 per run and budget, the AP50 gains, the budgets where the 0.15 target is met, images/s); --markdown also prints the
BENCHMARKS.md table. Data and runs under --work_dir are reused on a rerun.
"""

import dataclasses
import json

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "work_dir", "/tmp/bench_det", "Scratch folder for data and runs.", flag_values=FLAGS
)
flags.DEFINE_string("model", "resnet18", "Backbone (model.name).", flag_values=FLAGS)
flags.DEFINE_integer("pretrain_steps", 600, "Pretraining steps.", flag_values=FLAGS)
flags.DEFINE_list(
    "budgets",
    ["50", "100", "300"],
    "Step budgets; each trains both runs this long.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("batch_size", 8, "Global batch of the detection runs.", flag_values=FLAGS)
flags.DEFINE_integer(
    "image_size", 128, "detection.image_size (a multiple of 128).", flag_values=FLAGS
)
flags.DEFINE_integer("head_convs", 1, "detection.head_convs of both runs.", flag_values=FLAGS)
flags.DEFINE_integer("coco_train_images", 160, "COCO-like train scenes.", flag_values=FLAGS)
flags.DEFINE_integer("coco_val_images", 100, "COCO-like val scenes.", flag_values=FLAGS)
flags.DEFINE_integer(
    "classes", 12, "Pretraining classes = COCO-like categories.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "heads_batchnorm",
    "train",
    ["train", "inference"],
    "frozen_batchnorm of the pretrained run's fpn,head phase.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "head_lr",
    0.01,
    "SGD LR of the pretrained run's phases at --batch_size (absolute).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "scratch_lr", 0.01, "SGD LR of the scratch run at --batch_size (absolute).", flag_values=FLAGS
)
flags.DEFINE_string(
    "mixed_precision",
    "auto",
    "train.mixed_precision (auto: bfloat16 where native).",
    flag_values=FLAGS,
)
flags.DEFINE_bool("markdown", False, "Also print the markdown table.", flag_values=FLAGS)
flags.DEFINE_integer(
    "throughput_only",
    0,
    "N > 0: skip the comparison, only time N training steps (after N traced ones).",
    flag_values=FLAGS,
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Runs the comparison as the parsed flags say; returns the JSON line (and the table)."""
    cli.reject_extra_args(argv)
    from transfer_tf.benchmarks.detection import (
        DetectionBenchmarkSize,
        compare_detection,
        detection_throughput,
        markdown_table,
    )

    size = dataclasses.replace(
        DetectionBenchmarkSize(),
        model=flag_values.model,
        pretrain_steps=flag_values.pretrain_steps,
        classes=flag_values.classes,
        heads_batchnorm=flag_values.heads_batchnorm,
        budgets=tuple(int(b) for b in flag_values.budgets),
        batch_size=flag_values.batch_size,
        detection_image_size=flag_values.image_size,
        head_convs=flag_values.head_convs,
        coco_train_images=flag_values.coco_train_images,
        coco_val_images=flag_values.coco_val_images,
        head_lr=flag_values.head_lr,
        scratch_lr=flag_values.scratch_lr,
        mixed_precision=flag_values.mixed_precision,
    )
    if flag_values.throughput_only > 0:
        size = dataclasses.replace(size, throughput_steps=flag_values.throughput_only)
        return json.dumps(detection_throughput(flag_values.work_dir, size))
    result = compare_detection(flag_values.work_dir, size)
    out = json.dumps(result)
    if flag_values.markdown:
        out += "\n" + markdown_table(result)
    return out


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
