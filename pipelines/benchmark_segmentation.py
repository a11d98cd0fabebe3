"""Segmentation benchmark: Semantic-FPN from the pretrained backbone vs from scratch vs on the
frozen pretrained backbone, equal step budget, several seeds (transfer_tf/benchmarks/
segmentation.py).

    python -m pipelines.benchmark_segmentation --work_dir=/tmp/bench_seg --markdown

Generates the shape x colour ImageNet-like set and COCO-like scenes with exact instance masks,
builds their shards with the real builders (`include_masks`), pretrains a ResNet once, trains the
segmenter the three ways per seed with `run_finetuning` and scores each by mIoU at the original
image size on the val split. --data=photos --photo_dir=DIR runs the same comparison on the photo
transfer benchmark's real-photo scenes. Prints one JSON line (mIoU per run and seed, the means, the mean
gain and whether it meets the 0.10 target); --markdown also prints the BENCHMARKS.md table. Data
and runs under --work_dir are reused on a rerun.
"""

import dataclasses

from absl import flags

from transfer_tf import cli
from transfer_tf.benchmarks.downstream_flags import (
    define_downstream_benchmark_flags,
    downstream_size_fields,
    result_output,
)

FLAGS = flags.FlagValues()
define_downstream_benchmark_flags(
    FLAGS,
    task="segmentation",
    work_dir="/tmp/bench_seg",
    coco_val_images=60,
    image_size_multiple=32,
)
flags.DEFINE_integer("steps", 200, "Step budget of every segmentation run.", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds.", flag_values=FLAGS)
flags.DEFINE_enum(
    "head", "semantic_fpn", ["semantic_fpn", "deeplabv3plus"], "segmentation.head.",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_float(
    "lr", 0.01, "SGD LR of the pretrained/frozen runs at --batch_size (absolute).",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_enum(
    "data", "generated", ["generated", "photos"],
    "generated: shape x colour scenes; photos: the photo transfer benchmark's scenes "
    "(--photo_dir, e.g. make_benchmark_shards' photographs).",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_string("photo_dir", "", "Photographs for --data=photos.", flag_values=FLAGS)


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise cli.UsageError(f"--{name}={value}: expected >= {minimum}")


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Runs the comparison as the parsed flags say; returns the JSON line (and the table)."""
    cli.reject_extra_args(argv)
    for name in ("pretrain_steps", "batch_size", "coco_train_images", "coco_val_images"):
        _positive(name, getattr(flag_values, name))
    _positive("steps", flag_values.steps, 4)  # a quarter of it trains the new layers alone
    _positive("classes", flag_values.classes, 2)
    if flag_values.image_size < 32 or flag_values.image_size % 32:
        raise cli.UsageError(f"--image_size={flag_values.image_size}: expected a multiple of 32")
    try:
        seeds = tuple(int(s) for s in flag_values.seeds)
    except ValueError:
        raise cli.UsageError(f"--seeds={','.join(flag_values.seeds)}: expected integers") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise cli.UsageError(f"--seeds={','.join(flag_values.seeds)}: expected distinct seeds")
    if flag_values.data == "photos" and not flag_values.photo_dir:
        raise cli.UsageError("--photo_dir is required with --data=photos")
    from transfer_tf.benchmarks.segmentation import (
        SegmentationBenchmarkSize,
        compare_segmentation,
        markdown_table,
    )

    size = dataclasses.replace(
        SegmentationBenchmarkSize(),
        **downstream_size_fields(flag_values),
        steps=flag_values.steps,
        seeds=seeds,
        image_size=flag_values.image_size,
        head=flag_values.head,
        lr=flag_values.lr,
    )
    photo_dir = flag_values.photo_dir if flag_values.data == "photos" else ""
    result = compare_segmentation(flag_values.work_dir, size, photo_dir=photo_dir)
    return result_output(result, markdown_table, flag_values)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
