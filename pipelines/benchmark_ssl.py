"""Self-supervised pretraining benchmark (issue 17): a JSON line per seed, then the summary.

    python -m pipelines.benchmark_ssl --work_dir=/tmp/bench_ssl --methods=simclr,byol \
        --seeds=0,1,2 --markdown

On the generated data at equal budgets: linear-probe top-1 of each SSL, the random-init and the
supervised backbone on the ImageNet-like set, and COCO-like mAP after fine-tuning from each SSL
backbone, the supervised one and scratch (transfer_tf/benchmarks/ssl.py). The summary line holds
mean ± std over the seeds and the targets judged on the means. Data and runs under --work_dir
are reused on a rerun (delete it to measure afresh).
"""

import dataclasses
import json

from absl import flags, logging

from transfer_tf import cli

METHODS = ("simclr", "byol")
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "work_dir", "/tmp/bench_ssl", "Scratch folder for data and runs.", flag_values=FLAGS
)
flags.DEFINE_list(
    "methods", ["simclr", "byol"], "The SSL methods compared: simclr, byol.", flag_values=FLAGS
)
flags.DEFINE_string("model", "resnet18", "Backbone (model.name).", flag_values=FLAGS)
flags.DEFINE_integer("image_size", 32, "Training/eval image side.", flag_values=FLAGS)
flags.DEFINE_integer("pretrain_steps", 300, "Steps of each pretraining.", flag_values=FLAGS)
flags.DEFINE_integer(
    "pretrain_per_class",
    60,
    "Generated ImageNet-like train images per class (12 classes): the pretraining pool, the "
    "supervised arm's labels and the probes' train set.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("batch_size", 64, "Global batch size of every run.", flag_values=FLAGS)
flags.DEFINE_integer("probe_steps", 150, "Steps of each linear probe.", flag_values=FLAGS)
flags.DEFINE_integer("budget_steps", 100, "Steps of each COCO-like run.", flag_values=FLAGS)
flags.DEFINE_list(
    "coco_label_fractions",
    ["0.25"],
    "Also fine-tune on these fractions (0-1, exclusive) of the COCO-like train labels; empty: "
    "every label only.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "in_domain_unlabeled",
    False,
    "Also pretrain each method on the ImageNet-like train images plus the COCO-like train "
    "scenes, unlabeled (arms <method>_in_domain).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "detection_steps",
    0,
    "> 0: also a RetinaNet on COCO-like detection scenes from every backbone and from scratch, "
    "this many steps (at least 4: a quarter trains the FPN and heads alone).",
    flag_values=FLAGS,
)
flags.DEFINE_float("temperature", 0.2, "SimCLR NT-Xent temperature.", flag_values=FLAGS)
flags.DEFINE_float("ssl_peak_lr", 0.6, "Peak LARS learning rate of the SSL run.", flag_values=FLAGS)
flags.DEFINE_float(
    "color_strength", 1.0, "ssl.color_strength of the views (runs 1-5: 0.5).", flag_values=FLAGS
)
flags.DEFINE_float(
    "crop_area_min",
    0.08,
    "Smallest area fraction of the SSL views' random resized crops (runs 1-5: 0.25).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "mixed_precision",
    "auto",
    "train.mixed_precision (auto: bfloat16 where native).",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "xla",
    "auto",
    ["auto", "true", "false"],
    "train.xla (auto: measured per machine).",
    flag_values=FLAGS,
)
flags.DEFINE_list("seeds", ["0"], "One comparison per seed (data and runs).", flag_values=FLAGS)
flags.DEFINE_bool("markdown", False, "Also print the markdown table.", flag_values=FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Runs the benchmark as the parsed flags say; returns its stdout: a JSON line per seed, the
    summary line, and with --markdown the table."""
    cli.reject_extra_args(argv)
    from transfer_tf.benchmarks import ssl as ssl_bench
    from transfer_tf.benchmarks import ssl_summary

    seeds = []
    for seed in flag_values.seeds:
        if not seed.isdigit():
            raise cli.UsageError(f"--seeds={','.join(flag_values.seeds)}: expected integers >= 0")
        seeds.append(int(seed))
    if len(set(seeds)) != len(seeds) or not seeds:
        raise cli.UsageError(f"--seeds={','.join(flag_values.seeds)}: expected distinct seeds")
    if not flag_values.methods:
        raise cli.UsageError(f"--methods: expected one or more of {', '.join(METHODS)}")
    for method in flag_values.methods:
        if method not in METHODS:
            raise cli.UsageError(f"--methods: {method!r} is not one of {', '.join(METHODS)}")
    fractions = []
    for text in flag_values.coco_label_fractions:
        try:
            fractions.append(float(text))
        except ValueError:
            fractions.append(-1.0)
        if not 0 < fractions[-1] < 1:
            raise cli.UsageError(f"--coco_label_fractions: {text!r} is not a number in (0, 1)")
    if not 0 < flag_values.crop_area_min <= 1:
        raise cli.UsageError(f"--crop_area_min={flag_values.crop_area_min}: expected (0, 1]")
    if flag_values.pretrain_per_class < 1:
        raise cli.UsageError(
            f"--pretrain_per_class={flag_values.pretrain_per_class}: expected >= 1"
        )
    if flag_values.detection_steps and flag_values.detection_steps < 4:
        raise cli.UsageError(
            f"--detection_steps={flag_values.detection_steps}: expected 0 (off) or >= 4"
        )
    size = dataclasses.replace(
        ssl_bench.SSLBenchmarkSize(),
        methods=tuple(dict.fromkeys(flag_values.methods)),
        model=flag_values.model,
        image_size=flag_values.image_size,
        pretrain_steps=flag_values.pretrain_steps,
        pretrain_per_class=flag_values.pretrain_per_class,
        batch_size=flag_values.batch_size,
        probe_steps=flag_values.probe_steps,
        budget_steps=flag_values.budget_steps,
        coco_label_fractions=tuple(fractions),
        in_domain_unlabeled=flag_values.in_domain_unlabeled,
        detection_steps=flag_values.detection_steps,
        temperature=flag_values.temperature,
        ssl_peak_lr=flag_values.ssl_peak_lr,
        color_strength=flag_values.color_strength,
        crop_area_range=(flag_values.crop_area_min, 1.0),
        mixed_precision=flag_values.mixed_precision,
        xla={"auto": "auto", "true": True, "false": False}[flag_values.xla],
    )
    lines, results = [], []
    for seed in seeds:
        results.append(
            ssl_bench.compare_ssl(flag_values.work_dir, dataclasses.replace(size, seed=seed))
        )
        lines.append(json.dumps(results[-1]))
        logging.info("seed %d: %s", seed, lines[-1])
    summary = ssl_summary.summarize(results)
    lines.append(json.dumps({"summary": summary}))
    if flag_values.markdown:
        lines.append(ssl_summary.markdown_table(summary))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
