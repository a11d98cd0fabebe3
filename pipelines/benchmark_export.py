"""Serving benchmark on CPU: prints one JSON line.

    python -m pipelines.benchmark_export --model=resnet50 --image_size=224

Times the exported `serving_default` (JPEG bytes in: decode, eval crop, resize, model, top-k)
against calling the Keras model on already-preprocessed uint8 tensors, at batch 1 (latency) and
batch `--batch_size` (throughput). Weights are random: speed does not depend on them.
"""

import json
import os

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
cli.define_config_flags(flag_values=FLAGS)
flags.DEFINE_string("model", "resnet50", "Backbone (model.name).", flag_values=FLAGS)
flags.DEFINE_integer("image_size", 224, "Model input side (data.image_size).", flag_values=FLAGS)
flags.DEFINE_integer("num_classes", 1000, "Classes (data.num_classes).", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Throughput batch size.", flag_values=FLAGS)
flags.DEFINE_integer(
    "iterations", 3, "Timed throughput batches (after one warm-up).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "latency_iterations", 10, "Timed batch-1 calls (after one warm-up).", flag_values=FLAGS
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Times the export as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: the timings as one JSON line."""
    cli.reject_extra_args(argv)
    for name in ("image_size", "num_classes", "batch_size", "iterations", "latency_iterations"):
        if flag_values[name].value <= 0:
            raise cli.UsageError(
                f"--{name}: expected a positive integer, got {flag_values[name].value}"
            )
    from transfer_tf.benchmarks.serving import benchmark_export
    from transfer_tf.config import load_config
    from transfer_tf.models.resnet import build_classifier

    overrides = [
        f"model.name={flag_values.model}",
        f"data.image_size={flag_values.image_size}",
        f"data.num_classes={flag_values.num_classes}",
        *flag_values.set,
    ]
    cfg = load_config(flag_values.config, overrides)
    model = build_classifier(cfg.model, cfg.data.num_classes)
    result = benchmark_export(
        model,
        cfg,
        batch_size=flag_values.batch_size,
        iterations=flag_values.iterations,
        latency_iterations=flag_values.latency_iterations,
    )
    result = {
        "benchmark": "export",
        "model": cfg.model.name,
        "image_size": cfg.data.image_size,
        "num_classes": cfg.data.num_classes,
        "cpu_count": os.cpu_count(),
        **result,
    }
    return json.dumps(result)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
