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
from transfer_tf.benchmarks.downstream_flags import (
    define_downstream_benchmark_flags,
    downstream_size_fields,
    result_output,
)

FLAGS = flags.FlagValues()
define_downstream_benchmark_flags(
    FLAGS, task="detection", work_dir="/tmp/bench_det", coco_val_images=100, image_size_multiple=128
)
flags.DEFINE_list(
    "budgets",
    ["50", "100", "300"],
    "Step budgets; each trains both runs this long.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("head_convs", 1, "detection.head_convs of both runs.", flag_values=FLAGS)
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
        **downstream_size_fields(flag_values),
        heads_batchnorm=flag_values.heads_batchnorm,
        budgets=tuple(int(b) for b in flag_values.budgets),
        detection_image_size=flag_values.image_size,
        head_convs=flag_values.head_convs,
        head_lr=flag_values.head_lr,
    )
    if flag_values.throughput_only > 0:
        size = dataclasses.replace(size, throughput_steps=flag_values.throughput_only)
        return json.dumps(detection_throughput(flag_values.work_dir, size))
    result = compare_detection(flag_values.work_dir, size)
    return result_output(result, markdown_table, flag_values)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
