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
import json

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "work_dir", "/tmp/bench_seg", "Scratch folder for data and runs.", flag_values=FLAGS
)
flags.DEFINE_string("model", "resnet18", "Backbone (model.name).", flag_values=FLAGS)
flags.DEFINE_integer("pretrain_steps", 600, "Pretraining steps.", flag_values=FLAGS)
flags.DEFINE_integer("steps", 200, "Step budget of every segmentation run.", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 8, "Global batch of the segmentation runs.", flag_values=FLAGS)
flags.DEFINE_integer(
    "image_size", 128, "segmentation.image_size (a multiple of 32).", flag_values=FLAGS
)
flags.DEFINE_enum(
    "head", "semantic_fpn", ["semantic_fpn", "deeplabv3plus"], "segmentation.head.",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_integer("coco_train_images", 160, "COCO-like train scenes.", flag_values=FLAGS)
flags.DEFINE_integer("coco_val_images", 60, "COCO-like val scenes.", flag_values=FLAGS)
flags.DEFINE_integer(
    "classes", 12, "Pretraining classes = COCO-like categories.", flag_values=FLAGS
)
flags.DEFINE_float(
    "lr", 0.01, "SGD LR of the pretrained/frozen runs at --batch_size (absolute).",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_float(
    "scratch_lr", 0.01, "SGD LR of the scratch run at --batch_size (absolute).", flag_values=FLAGS
)
flags.DEFINE_string(
    "mixed_precision", "auto", "train.mixed_precision (auto: bfloat16 where native).",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_enum(
    "data", "generated", ["generated", "photos"],
    "generated: shape x colour scenes; photos: the photo transfer benchmark's scenes "
    "(--photo_dir, e.g. make_benchmark_shards' photographs).",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_string("photo_dir", "", "Photographs for --data=photos.", flag_values=FLAGS)
flags.DEFINE_bool("markdown", False, "Also print the markdown table.", flag_values=FLAGS)


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
        model=flag_values.model,
        pretrain_steps=flag_values.pretrain_steps,
        classes=flag_values.classes,
        steps=flag_values.steps,
        seeds=seeds,
        batch_size=flag_values.batch_size,
        image_size=flag_values.image_size,
        head=flag_values.head,
        coco_train_images=flag_values.coco_train_images,
        coco_val_images=flag_values.coco_val_images,
        lr=flag_values.lr,
        scratch_lr=flag_values.scratch_lr,
        mixed_precision=flag_values.mixed_precision,
    )
    photo_dir = flag_values.photo_dir if flag_values.data == "photos" else ""
    result = compare_segmentation(flag_values.work_dir, size, photo_dir=photo_dir)
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
