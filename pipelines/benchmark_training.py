"""Training throughput: our custom loop vs bare `model.fit`, float32 vs bfloat16, synthetic vs
TFRecords through the real input pipeline. Prints one JSON line.

    python -m pipelines.benchmark_training --model=resnet50 --image_size=64 --batch_size=32 \
        --steps=20 --repeats=2

Each measurement discards the first `--warmup` steps (tracing, allocation) and reports the median
images/s of the timed steps; the variants are interleaved `--repeats` times to spread machine noise.
"""

import json
import os
import tempfile
import time

import numpy as np
from absl import flags

from transfer_tf import cli

flags.DEFINE_string("model", "resnet50", "Model name.")
flags.DEFINE_integer("image_size", 64, "Square image side.")
flags.DEFINE_integer("batch_size", 32, "Global batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
flags.DEFINE_integer("warmup", 3, "Untimed steps per measurement.")
flags.DEFINE_integer("repeats", 2, "Interleaved repetitions of every variant.")
flags.DEFINE_integer("num_classes", 100, "Head width.")
flags.DEFINE_list(
    "variants",
    "loop_fp32,fit_fp32,loop_bf16,tfrecord_bf16",
    "Which of loop_fp32, fit_fp32, loop_bf16, fit_bf16, tfrecord_fp32, tfrecord_bf16 to run.",
)
FLAGS = flags.FLAGS


def _rate(times: list[float], batch: int, warmup: int) -> float:
    timed = np.diff(times)[warmup:]
    return float(batch / np.median(timed))


def _data(batch, size, classes):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, [batch, size, size, 3]).astype("uint8")
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)]
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def _build(precision_name):
    import keras

    from transfer_tf.config import ModelConfig, TrainConfig
    from transfer_tf.models.resnet import build_classifier
    from transfer_tf.training import precision
    from transfer_tf.training.optimizers import make_optimizer

    precision.set_policy(precision_name)
    keras.utils.set_random_seed(0)
    model = build_classifier(ModelConfig(name=FLAGS.model), FLAGS.num_classes)
    return model, make_optimizer(TrainConfig(mixed_precision=precision_name))


def _loop(precision_name, dataset_fn):

    from transfer_tf.training.loop import Trainer
    from transfer_tf.training.losses import softmax_cross_entropy
    from transfer_tf.training.schedules import warmup_constant
    from transfer_tf.training.strategy import make_strategy

    strategy = make_strategy("one_device")
    with strategy.scope():
        model, opt = _build(precision_name)
    times: list[float] = []

    class Clock:
        def on_train_begin(self, *a):
            times.append(time.perf_counter())

        def on_execution_end(self, step, logs):
            times.append(time.perf_counter())

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
            global_batch_size=FLAGS.batch_size,
            # The model.fit baseline compiles no L2 term: leave it out here too (same loss).
            weight_decay=0.0,
            checkpoint_every_steps=10**9,
            log_every_steps=10**9,
            hooks=[Clock()],
        )
        trainer.train(
            dataset_fn,
            end_step=FLAGS.warmup + FLAGS.steps,
            lr_schedule=warmup_constant(0.01),
            loss_fn=softmax_cross_entropy(0.1),
        )
    return _rate(times, FLAGS.batch_size, FLAGS.warmup)


def _fit(precision_name):
    import keras

    model, opt = _build(precision_name)
    model.compile(
        optimizer=opt,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
    )
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            times.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    data = _data(FLAGS.batch_size, FLAGS.image_size, FLAGS.num_classes)
    model.fit(
        data, steps_per_epoch=FLAGS.warmup + FLAGS.steps, epochs=1, verbose=0, callbacks=[Clock()]
    )
    return _rate(times, FLAGS.batch_size, FLAGS.warmup)


def _tfrecord_fn(work_dir):
    """Writes 256 JPEG records (1.5x the model size) and returns a dataset_fn over them."""
    import tensorflow as tf

    from transfer_tf.config import DataConfig
    from transfer_tf.data.input import build_dataset
    from transfer_tf.data.schemas import classification_example

    side = int(FLAGS.image_size * 1.5)
    rng = np.random.default_rng(0)
    for s in range(4):
        with tf.io.TFRecordWriter(os.path.join(work_dir, f"train-{s:05d}-of-00004")) as w:
            for i in range(64):
                img = rng.integers(0, 255, [side, side, 3]).astype("uint8")
                jpeg = tf.io.encode_jpeg(img, quality=90).numpy()
                label = int(rng.integers(0, FLAGS.num_classes))
                w.write(
                    classification_example(
                        jpeg, label + 1, "c", side, side, f"{i}.jpg"
                    ).SerializeToString()
                )
    data_cfg = DataConfig(
        train_pattern=os.path.join(work_dir, "train-*"),
        num_classes=FLAGS.num_classes,
        image_size=FLAGS.image_size,
        shuffle_buffer=256,
    )
    return lambda ctx: build_dataset(
        data_cfg, split="train", global_batch_size=FLAGS.batch_size, input_context=ctx
    )


def main(argv):
    cli.reject_extra_args(argv)
    known = {"loop_fp32", "fit_fp32", "loop_bf16", "fit_bf16", "tfrecord_fp32", "tfrecord_bf16"}
    bad = [v for v in FLAGS.variants if v not in known]
    if bad:
        raise cli.UsageError(f"--variants: unknown {bad} (expected some of {sorted(known)})")
    results: dict[str, list[float]] = {v: [] for v in FLAGS.variants}
    with tempfile.TemporaryDirectory() as work:
        tf_fn = (
            _tfrecord_fn(work) if any(v.startswith("tfrecord") for v in FLAGS.variants) else None
        )
        synthetic = lambda ctx: _data(FLAGS.batch_size, FLAGS.image_size, FLAGS.num_classes)  # noqa: E731
        for _ in range(FLAGS.repeats):
            for v in FLAGS.variants:
                kind, prec = v.split("_")
                prec = "bfloat16" if prec == "bf16" else "none"
                if kind == "fit":
                    results[v].append(_fit(prec))
                else:
                    results[v].append(_loop(prec, tf_fn if kind == "tfrecord" else synthetic))
    out = {
        "model": FLAGS.model,
        "image_size": FLAGS.image_size,
        "batch_size": FLAGS.batch_size,
        "images_per_sec": {v: round(float(np.median(r)), 2) for v, r in results.items()},
        "all_runs": {v: [round(x, 2) for x in r] for v, r in results.items()},
    }
    ips = out["images_per_sec"]
    if "loop_fp32" in ips and "fit_fp32" in ips:
        out["loop_over_fit_fp32"] = round(ips["loop_fp32"] / ips["fit_fp32"], 3)
    if "loop_fp32" in ips and "loop_bf16" in ips:
        out["bf16_speedup"] = round(ips["loop_bf16"] / ips["loop_fp32"], 3)
    for prec in ("fp32", "bf16"):
        if f"tfrecord_{prec}" in ips and f"loop_{prec}" in ips:
            out[f"tfrecord_fraction_{prec}"] = round(
                ips[f"tfrecord_{prec}"] / ips[f"loop_{prec}"], 3
            )
    print(json.dumps(out))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
