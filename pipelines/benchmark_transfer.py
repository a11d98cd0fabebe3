"""Transfer benchmark: pretrained + schedule vs scratch vs linear probe, equal step budget.

    python -m pipelines.benchmark_transfer --work_dir=/tmp/bench_transfer

Generates the ImageNet-like and COCO-like sets, builds their shards, pretrains, then trains the
COCO-like multi-label task three ways; prints one JSON line (mAP / F1 of each run) and, with
--markdown, the BENCHMARKS.md table. Data and runs under --work_dir are reused on a rerun.
"""

import dataclasses
import json

from absl import flags

from transfer_tf import cli

flags.DEFINE_string("work_dir", "/tmp/bench_transfer", "Scratch folder for data and runs.")
flags.DEFINE_integer("image_size", 48, "Training/eval image side.")
flags.DEFINE_integer("pretrain_steps", 600, "Pretraining steps on the ImageNet-like set.")
flags.DEFINE_integer("budget_steps", 200, "Steps of EACH transfer run (equal budget).")
flags.DEFINE_integer("batch_size", 32, "Global batch size of every run.")
flags.DEFINE_string("model", "resnet18", "Backbone (model.name).")
flags.DEFINE_bool("markdown", False, "Also print the markdown table.")
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    from transfer_tf.transfer.benchmark import BenchmarkSize, compare_transfer, markdown_table

    size = dataclasses.replace(
        BenchmarkSize(),
        image_size=FLAGS.image_size,
        pretrain_steps=FLAGS.pretrain_steps,
        budget_steps=FLAGS.budget_steps,
        batch_size=FLAGS.batch_size,
        model=FLAGS.model,
    )
    result = compare_transfer(FLAGS.work_dir, size)
    print(json.dumps(result), flush=True)
    if FLAGS.markdown:
        print(markdown_table(result))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
