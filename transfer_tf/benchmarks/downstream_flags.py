"""The flags both downstream-task benchmark binaries take (`pipelines/benchmark_detection.py`,
`pipelines/benchmark_segmentation.py`): scratch folder, backbone and pretraining, the scenes, the
fine-tuning batch, input size and scratch LR, precision and the markdown table.

Only absl here: the binaries define their flags at import, before `--help` is answered, so this
module must not pull in TensorFlow or the benchmarks themselves.

Example:
    define_downstream_benchmark_flags(FLAGS, task="detection", work_dir="/tmp/bench_det",
                                      coco_val_images=100, image_size_multiple=128)
    size = dataclasses.replace(DetectionBenchmarkSize(), **downstream_size_fields(FLAGS), ...)
"""

from __future__ import annotations

from absl import flags


def define_downstream_benchmark_flags(
    flag_values: flags.FlagValues,
    *,
    task: str,
    work_dir: str,
    coco_val_images: int,
    image_size_multiple: int,
) -> None:
    """Defines the shared flags on `flag_values`. `task` (`detection`, `segmentation`) names the
    runs and the config section in the help texts; `work_dir` and `coco_val_images` are the
    binary's defaults; `image_size_multiple` is what `--image_size` must be a multiple of."""
    flags.DEFINE_string(
        "work_dir", work_dir, "Scratch folder for data and runs.", flag_values=flag_values
    )
    flags.DEFINE_string("model", "resnet18", "Backbone (model.name).", flag_values=flag_values)
    flags.DEFINE_integer("pretrain_steps", 600, "Pretraining steps.", flag_values=flag_values)
    flags.DEFINE_integer(
        "batch_size", 8, f"Global batch of the {task} runs.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "image_size",
        128,
        f"{task}.image_size (a multiple of {image_size_multiple}).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "coco_train_images", 160, "COCO-like train scenes.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "coco_val_images", coco_val_images, "COCO-like val scenes.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "classes", 12, "Pretraining classes = COCO-like categories.", flag_values=flag_values
    )
    flags.DEFINE_float(
        "scratch_lr",
        0.01,
        "SGD LR of the scratch run at --batch_size (absolute).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "mixed_precision",
        "auto",
        "train.mixed_precision (auto: bfloat16 where native).",
        flag_values=flag_values,
    )
    flags.DEFINE_bool("markdown", False, "Also print the markdown table.", flag_values=flag_values)


def downstream_size_fields(flag_values: flags.FlagValues) -> dict:
    """The benchmark size fields the shared flags set, by the name both size dataclasses give
    them (`--image_size` is left out: each benchmark names its field differently)."""
    return {
        "model": flag_values.model,
        "pretrain_steps": flag_values.pretrain_steps,
        "classes": flag_values.classes,
        "batch_size": flag_values.batch_size,
        "coco_train_images": flag_values.coco_train_images,
        "coco_val_images": flag_values.coco_val_images,
        "scratch_lr": flag_values.scratch_lr,
        "mixed_precision": flag_values.mixed_precision,
    }


def result_output(result: dict, markdown_table, flag_values: flags.FlagValues) -> str:
    """What the binary prints: `result` as one JSON line, then with `--markdown` the
    BENCHMARKS.md table `markdown_table(result)` makes of it."""
    import json

    out = json.dumps(result)
    if flag_values.markdown:
        out += "\n" + markdown_table(result)
    return out
