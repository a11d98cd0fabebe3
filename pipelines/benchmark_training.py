"""Training throughput: our custom loop vs bare `model.fit`, float32 vs bfloat16, XLA on/off,
synthetic tensors vs TFRecords through the real input pipeline, at one or several image sizes.
Prints one JSON document.

    # The BENCHMARKS.md table in one command (ResNet-50, 32/64/128/224 px, loop/fit at 224 px):
    python -m pipelines.benchmark_training --table
    # One cell family:
    python -m pipelines.benchmark_training --model=resnet50 --image_sizes=64 --batch_size=32 \
        --variants=loop_fp32,loop_fp32_xla,fit_fp32 --steps=10 --repeats=2

Variant names are KIND_PRECISION[_xla]: KIND `loop` (our Trainer on an in-memory synthetic batch),
`fit` (bare `model.fit` of the same Keras model, optimizer and loss), `tfrecord` (our Trainer fed by
`build_dataset` from generated JPEG records: the real input pipeline on the same cores);
PRECISION `fp32` | `bf16`; `_xla` compiles the step with XLA. The loop trains without the L2 term
(model.fit compiles none), with label smoothing 0.1 for both.

Each measurement discards `--warmup` steps (tracing, XLA compile, allocation) and reports the
median images/s of the timed steps, plus process CPU seconds per image (less sensitive to other
jobs on the machine than wall time); variants are interleaved `--repeats` times. Every cell also
gets `achieved_gflops` and `fraction_of_peak`: the training step's FLOPs per image, counted on the
traced step (`benchmarks/flops.py`: 1 multiply-add = 2 FLOPs), times images/s, over the CPU's
float32 peak estimated from /proc/cpuinfo (`peak` in the output says how, and its assumptions).
"""

import dataclasses
import json
import os
import tempfile
import time

import numpy as np
from absl import flags

from transfer_tf import cli
from transfer_tf.benchmarks.training_inputs import synthetic_batches, tfrecord_batches

FLAGS = flags.FlagValues()
flags.DEFINE_string("model", "resnet50", "Model name.", flag_values=FLAGS)
flags.DEFINE_list(
    "image_sizes", ["64"], "Square image sides, e.g. 32,64,128,224.", flag_values=FLAGS
)
flags.DEFINE_integer("batch_size", 32, "Global batch size.", flag_values=FLAGS)
flags.DEFINE_integer(
    "steps", 10, "Timed steps per measurement (see --steps_by_size).", flag_values=FLAGS
)
flags.DEFINE_list(
    "steps_by_size",
    [],
    "SIZE:STEPS overrides of --steps, e.g. 224:3 (big images are slow).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("warmup", 2, "Untimed steps per measurement.", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 1, "Interleaved repetitions of every variant.", flag_values=FLAGS)
flags.DEFINE_integer("num_classes", 100, "Head width.", flag_values=FLAGS)
flags.DEFINE_float(
    "loop_weight_decay",
    0.0,
    "L2 coefficient of the loop variants (0: none, like model.fit; the real SGD jobs use 1e-4).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "steps_per_execution",
    1,
    "Steps per tf.function call of the loop variants.",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "variants",
    ["loop_fp32", "fit_fp32", "loop_bf16", "tfrecord_bf16"],
    "KIND_PRECISION[_xla] with KIND loop|fit|tfrecord and PRECISION fp32|bf16.",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "fit_sizes",
    [],
    "Run fit_* variants only at these sizes (default: every size).",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "tfrecord_sizes",
    [],
    "Run tfrecord_* variants only at these sizes (default: every size).",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "table",
    False,
    "The BENCHMARKS.md table: ResNet-50, batch 32, sizes 32,64,128,224, loop fp32/bf16 x XLA "
    "on/off, fit_fp32 and loop_fp32 at 224 (loop/fit ratio), tfrecord_fp32/bf16 at 64; "
    "steps 6/4/3/2 by size after 1 warmup. Overrides --model/--image_sizes/--variants/"
    "--steps_by_size/--warmup.",
    flag_values=FLAGS,
)

KINDS = ("loop", "fit", "tfrecord")
PRECISIONS = {"fp32": "none", "bf16": "bfloat16"}

# What --table sets, over the flags' values.
_TABLE_PRESET = {
    "model": "resnet50",
    "batch_size": 32,
    "image_sizes": ["32", "64", "128", "224"],
    "variants": [
        "loop_fp32",
        "loop_fp32_xla",
        "loop_bf16",
        "loop_bf16_xla",
        "fit_fp32",
        "tfrecord_fp32",
        "tfrecord_bf16",
    ],
    "fit_sizes": ["224"],
    "tfrecord_sizes": ["64"],
    # Small step counts at large sizes: an XLA float32 step at 224 px takes minutes on 2 cores.
    "steps_by_size": ["32:6", "64:4", "128:3", "224:2"],
    "warmup": 1,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The flags' values with --table's preset applied: the preset goes here rather than into
    the parsed flags, which belong to the caller (the binary's main, or a test)."""

    model: str
    image_sizes: list[str]
    batch_size: int
    steps: int
    steps_by_size: list[str]
    warmup: int
    repeats: int
    num_classes: int
    loop_weight_decay: float
    steps_per_execution: int
    variants: list[str]
    fit_sizes: list[str]
    tfrecord_sizes: list[str]


def settings_from_flags(flag_values: flags.FlagValues) -> Settings:
    """The run's settings: the parsed flags, overridden by the --table preset when given."""
    values = {f.name: flag_values[f.name].value for f in dataclasses.fields(Settings)}
    if flag_values.table:
        values.update(_TABLE_PRESET)
    return Settings(**values)


def parse_variant(name: str) -> tuple[str, str, bool]:
    """`loop_bf16_xla` -> ("loop", "bfloat16", True); raises UsageError for unknown names."""
    parts = name.split("_")
    xla = parts[-1] == "xla"
    if xla:
        parts = parts[:-1]
    if len(parts) != 2 or parts[0] not in KINDS or parts[1] not in PRECISIONS:
        raise cli.UsageError(
            f"--variants: unknown {name!r} (expected KIND_PRECISION[_xla] with KIND "
            f"{'|'.join(KINDS)} and PRECISION {'|'.join(PRECISIONS)})"
        )
    return parts[0], PRECISIONS[parts[1]], xla


def _rate(marks: list[tuple[float, float, int]], batch: int, warmup: int) -> dict:
    """Images/s (median over executions) and CPU s/image from (wall, cpu, global step) marks
    taken at execution ends; executions ending at or before step `warmup` are not timed."""
    wall, cpu, step = (np.array(x, dtype=float) for x in zip(*marks, strict=True))
    keep = step[1:] > warmup
    per_step_wall = (np.diff(wall) / np.diff(step))[keep]
    per_step_cpu = (np.diff(cpu) / np.diff(step))[keep]
    return {
        "images_per_sec": float(batch / np.median(per_step_wall)),
        "cpu_seconds_per_image": float(np.median(per_step_cpu) / batch),
    }


def _mark(step: int) -> tuple[float, float, int]:
    return time.perf_counter(), time.process_time(), step


def _reset():
    """Drops the previous variant's models (outside any strategy scope)."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def _build(settings: Settings, precision_name: str):
    import keras

    from transfer_tf.config import ModelConfig, TrainConfig
    from transfer_tf.models.resnet import build_classifier
    from transfer_tf.training import precision
    from transfer_tf.training.optimizers import make_optimizer

    precision.set_policy(precision_name)
    keras.utils.set_random_seed(0)
    model = build_classifier(ModelConfig(name=settings.model), settings.num_classes)
    return model, make_optimizer(TrainConfig(mixed_precision=precision_name))


def _loop(settings: Settings, precision_name: str, xla: bool, dataset_fn, steps: int) -> dict:
    from transfer_tf.training.loop import Trainer
    from transfer_tf.training.losses import softmax_cross_entropy
    from transfer_tf.training.schedules import warmup_constant
    from transfer_tf.training.strategy import make_strategy

    _reset()
    strategy = make_strategy("one_device")
    with strategy.scope():
        model, opt = _build(settings, precision_name)
    marks: list[tuple[float, float, int]] = []

    class Clock:
        def on_train_begin(self, *a):
            marks.append(_mark(0))

        def on_execution_end(self, step, logs):
            marks.append(_mark(step))

        def on_eval_end(self, *a):
            pass

        def on_train_end(self, *a):
            pass

    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(
            model,
            opt,
            strategy,
            d,
            global_batch_size=settings.batch_size,
            # The model.fit baseline compiles no L2 term: by default none here either.
            weight_decay=settings.loop_weight_decay,
            steps_per_execution=settings.steps_per_execution,
            jit_compile=xla,
            checkpoint_every_steps=10**9,
            log_every_steps=10**9,
            hooks=[Clock()],
        )
        trainer.train(
            dataset_fn,
            end_step=settings.warmup + steps,
            lr_schedule=warmup_constant(0.01),
            loss_fn=softmax_cross_entropy(0.1),
        )
    return _rate(marks, settings.batch_size, settings.warmup)


def _fit(settings: Settings, precision_name: str, xla: bool, size: int, steps: int) -> dict:
    import keras

    _reset()
    model, opt = _build(settings, precision_name)
    model.compile(
        optimizer=opt,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        jit_compile=xla,
    )
    marks: list[tuple[float, float, int]] = []

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks.append(_mark(0))

        def on_train_batch_end(self, batch, logs=None):
            marks.append(_mark(batch + 1))

    data = synthetic_batches(settings.batch_size, size, settings.num_classes)
    model.fit(
        data, steps_per_epoch=settings.warmup + steps, epochs=1, verbose=0, callbacks=[Clock()]
    )
    return _rate(marks, settings.batch_size, settings.warmup)


def _train_flops(settings: Settings, size: int) -> float:
    """FLOPs per image of one float32 training step of the benchmarked model at `size` px."""
    from transfer_tf.benchmarks.flops import step_flops

    _reset()
    model, _ = _build(settings, "none")
    return step_flops(model, size, training=True)


def _ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b:
        return None
    return round(a["images_per_sec"] / b["images_per_sec"], 3)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Times the variants as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: the results as one JSON document."""
    cli.reject_extra_args(argv)
    settings = settings_from_flags(flag_values)
    parsed = {v: parse_variant(v) for v in settings.variants}
    try:
        sizes = [int(s) for s in settings.image_sizes]
        steps_by_size = {int(k): int(v) for k, v in (s.split(":") for s in settings.steps_by_size)}
    except ValueError:
        raise cli.UsageError(
            "--image_sizes/--steps_by_size: expected integers like 32,64 and 224:3"
        ) from None
    only = {"fit": settings.fit_sizes, "tfrecord": settings.tfrecord_sizes}
    from transfer_tf.benchmarks import flops
    from transfer_tf.training import hardware

    hw = hardware.detect()
    peak = flops.cpu_peak() if hw.kind == "cpu" else None
    start = time.perf_counter()
    table: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as work:
        for size in sizes:
            steps = steps_by_size.get(size, settings.steps)
            runs: dict[str, list[dict]] = {}
            wanted = [
                v
                for v, (kind, _, _) in parsed.items()
                if not only.get(kind) or str(size) in only[kind]
            ]
            tf_fn = (
                tfrecord_batches(work, size, settings.batch_size, settings.num_classes)
                if any(v.startswith("tfrecord") for v in wanted)
                else None
            )

            def synthetic(ctx, size=size):
                return synthetic_batches(settings.batch_size, size, settings.num_classes)

            for _ in range(settings.repeats):
                for v in wanted:
                    kind, prec, xla = parsed[v]
                    if kind == "fit":
                        result = _fit(settings, prec, xla, size, steps)
                    else:
                        result = _loop(
                            settings, prec, xla, tf_fn if kind == "tfrecord" else synthetic, steps
                        )
                    runs.setdefault(v, []).append(result)
            cells = {}
            for v, rs in runs.items():
                cells[v] = {
                    "images_per_sec": round(float(np.median([r["images_per_sec"] for r in rs])), 2),
                    "cpu_seconds_per_image": round(
                        float(np.median([r["cpu_seconds_per_image"] for r in rs])), 4
                    ),
                    "runs": [round(r["images_per_sec"], 2) for r in rs],
                }
            derived = {
                "bf16_over_fp32": _ratio(cells.get("loop_bf16"), cells.get("loop_fp32")),
                "xla_over_plain_fp32": _ratio(cells.get("loop_fp32_xla"), cells.get("loop_fp32")),
                "xla_over_plain_bf16": _ratio(cells.get("loop_bf16_xla"), cells.get("loop_bf16")),
                "loop_over_fit_fp32": _ratio(cells.get("loop_fp32"), cells.get("fit_fp32")),
                "tfrecord_over_synthetic_fp32": _ratio(
                    cells.get("tfrecord_fp32"), cells.get("loop_fp32")
                ),
                "tfrecord_over_synthetic_bf16": _ratio(
                    cells.get("tfrecord_bf16"), cells.get("loop_bf16")
                ),
            }
            step_flops = _train_flops(settings, size)
            for cell in cells.values():
                if peak:
                    cell.update(
                        flops.fraction_of_peak(
                            cell["images_per_sec"],
                            step_flops,
                            peak["peak_gflops"],
                            cell["cpu_seconds_per_image"],
                            peak["cores"],
                        )
                    )
            best = max(cells, key=lambda v: cells[v]["images_per_sec"]) if cells else None
            table[str(size)] = {
                "steps": steps,
                "train_gflop_per_image": round(step_flops / 1e9, 3),
                "images_per_sec": cells,
                "derived": {k: v for k, v in derived.items() if v is not None},
                "fastest": best,
            }
    out = {
        "cpu_class": hw.cpu_class,
        "hardware": hw.describe(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "model": settings.model,
        "batch_size": settings.batch_size,
        "warmup": settings.warmup,
        "loop_weight_decay": settings.loop_weight_decay,
        "steps_per_execution": settings.steps_per_execution,
        "repeats": settings.repeats,
        "seconds": round(time.perf_counter() - start, 1),
        "peak": peak,
        "flops_convention": flops.CONVENTION,
        "table": table,
    }
    return json.dumps(out)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
