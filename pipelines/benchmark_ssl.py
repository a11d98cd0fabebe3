"""Self-supervised pretraining benchmark (issue 17): one JSON line.

    python -m pipelines.benchmark_ssl --work_dir=/tmp/bench_ssl --method=simclr

On the generated data at equal budgets: linear-probe top-1 of the SSL, random-init and supervised
backbones on the ImageNet-like set, and COCO-like mAP after fine-tuning from the SSL backbone,
the supervised one and scratch (transfer_tf/benchmarks/ssl.py). Data and runs under --work_dir
are reused on a rerun (delete it to measure afresh).
"""

import dataclasses
import json

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "work_dir", "/tmp/bench_ssl", "Scratch folder for data and runs.", flag_values=FLAGS
)
flags.DEFINE_enum("method", "simclr", ["simclr", "byol"], "The SSL method.", flag_values=FLAGS)
flags.DEFINE_string("model", "resnet18", "Backbone (model.name).", flag_values=FLAGS)
flags.DEFINE_integer("image_size", 32, "Training/eval image side.", flag_values=FLAGS)
flags.DEFINE_integer("pretrain_steps", 300, "Steps of each pretraining.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Global batch size of every run.", flag_values=FLAGS)
flags.DEFINE_integer("probe_steps", 150, "Steps of each linear probe.", flag_values=FLAGS)
flags.DEFINE_integer("budget_steps", 100, "Steps of each COCO-like run.", flag_values=FLAGS)
flags.DEFINE_float("temperature", 0.2, "SimCLR NT-Xent temperature.", flag_values=FLAGS)
flags.DEFINE_float("ssl_peak_lr", 0.6, "Peak LARS learning rate of the SSL run.", flag_values=FLAGS)
flags.DEFINE_float("color_strength", 0.5, "ssl.color_strength of the views.", flag_values=FLAGS)
flags.DEFINE_string("mixed_precision", "bfloat16", "train.mixed_precision.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Data and run seed.", flag_values=FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Runs the benchmark as the parsed flags say; returns its JSON line."""
    cli.reject_extra_args(argv)
    from transfer_tf.benchmarks.ssl import SSLBenchmarkSize, compare_ssl

    size = dataclasses.replace(
        SSLBenchmarkSize(),
        method=flag_values.method,
        model=flag_values.model,
        image_size=flag_values.image_size,
        pretrain_steps=flag_values.pretrain_steps,
        batch_size=flag_values.batch_size,
        probe_steps=flag_values.probe_steps,
        budget_steps=flag_values.budget_steps,
        temperature=flag_values.temperature,
        ssl_peak_lr=flag_values.ssl_peak_lr,
        color_strength=flag_values.color_strength,
        mixed_precision=flag_values.mixed_precision,
        seed=flag_values.seed,
    )
    return json.dumps(compare_ssl(flag_values.work_dir, size))


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
