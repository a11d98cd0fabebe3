"""Transfer benchmark: pretrained + schedule vs scratch vs linear probe, equal step budget.

    python -m pipelines.benchmark_transfer --work_dir=/tmp/bench_transfer
    python -m pipelines.benchmark_transfer --data=photos --photo_dir=/tmp/photos \
        --work_dir=/tmp/bench_photos --seeds=0,1,2 --markdown

--data=synthetic (default) generates the shape x colour ImageNet-like and COCO-like sets.
--data=photos cuts an ImageNet-layout set and a COCO-layout multi-object set out of real
photographs (--photo_dir; or --photo_wheel=a.whl,b.whl to take the sample photographs out of
downloaded scikit-image / matplotlib wheels into --photo_dir first), builds their shards with the
real builders, pretrains with configs/imagenet_resnet50.yaml's recipe and compares the shipped
configs/coco_multilabel_resnet50.yaml recipe (only data and runtime overridden) with a linear
probe, a full fine-tune and scratch at the shipped recipe's step budget, once per seed
(transfer_tf/benchmarks/transfer_photos.py). --arm=NAME:KEY=V;KEY=V adds a variant of the shipped
recipe. Prints one JSON line per seed, then one summary line (mean ± std per arm); --markdown
also prints the BENCHMARKS.md table. Data and runs under --work_dir are reused on a rerun.
"""

import dataclasses
import json

from absl import flags

from transfer_tf import cli

flags.DEFINE_string("work_dir", "/tmp/bench_transfer", "Scratch folder for data and runs.")
flags.DEFINE_enum("data", "synthetic", ["synthetic", "photos"], "Which benchmark data.")
flags.DEFINE_string("photo_dir", "", "--data=photos: folder of *.jpg/*.jpeg/*.png photographs.")
flags.DEFINE_list("photo_wheel", [], "Wheels to extract the sample photographs from first.")
flags.DEFINE_integer("image_size", None, "Training/eval image side (synthetic 48, photos 32).")
flags.DEFINE_integer("pretrain_steps", 600, "--data=synthetic: pretraining steps.")
flags.DEFINE_float("pretrain_epochs", 6.0, "--data=photos: pretraining epochs.")
flags.DEFINE_integer(
    "budget_steps",
    None,
    "--data=synthetic: steps of EACH transfer run (default 200). Photos: always the shipped "
    "recipe's length on the data.",
)
flags.DEFINE_integer("batch_size", 32, "Global batch size of every run.")
flags.DEFINE_string("model", "resnet18", "Backbone (model.name).")
flags.DEFINE_list("seeds", ["0"], "--data=photos: one comparison per seed.")
flags.DEFINE_integer("train_per_class", 60, "--data=photos: pretraining images per photograph.")
flags.DEFINE_integer("val_per_class", 10, "--data=photos: pretraining val images per photograph.")
flags.DEFINE_integer("coco_classes", 8, "--data=photos: photographs that are COCO objects.")
flags.DEFINE_integer("coco_train_images", 240, "--data=photos: COCO-layout train images.")
flags.DEFINE_integer("coco_val_images", 120, "--data=photos: COCO-layout val images.")
flags.DEFINE_list(
    "arms", None, "--data=photos: subset of shipped,linear_probe,full_finetune,scratch."
)
flags.DEFINE_multi_string(
    "arm", [], "--data=photos: extra arm NAME:KEY=V;KEY=V (shipped + overrides)."
)
flags.DEFINE_multi_string("pretrain_set", [], "--data=photos: overrides of the pretraining config.")
flags.DEFINE_string("mixed_precision", "none", "--data=photos: train.mixed_precision of all runs.")
flags.DEFINE_bool("markdown", False, "Also print the markdown table.")
FLAGS = flags.FLAGS


def _photos():
    from transfer_tf.benchmarks import transfer_photos as pb
    from transfer_tf.datagen import photos as photo_sets

    if FLAGS.photo_wheel:
        photo_sets.extract_wheel_photos(FLAGS.photo_wheel, FLAGS.photo_dir)
    extra = {}
    for spec in FLAGS.arm:
        name, _, overrides = spec.partition(":")
        if not name or not overrides:
            raise cli.UsageError(f"--arm={spec}: expected NAME:KEY=V;KEY=V")
        extra[name] = tuple(o for o in overrides.split(";") if o)
    base = pb.PhotoBenchmarkSize()
    size = dataclasses.replace(
        base,
        model=FLAGS.model,
        image_size=FLAGS.image_size or base.image_size,
        batch_size=FLAGS.batch_size,
        pretrain_epochs=FLAGS.pretrain_epochs,
        train_per_class=FLAGS.train_per_class,
        val_per_class=FLAGS.val_per_class,
        coco_classes=FLAGS.coco_classes,
        coco_train_images=FLAGS.coco_train_images,
        coco_val_images=FLAGS.coco_val_images,
        mixed_precision=FLAGS.mixed_precision,
        arms=tuple(FLAGS.arms) if FLAGS.arms is not None else pb.ARMS,
        extra_arms=extra,
        pretrain_overrides=tuple(FLAGS.pretrain_set),
    )
    results = []
    for seed in FLAGS.seeds:
        result = pb.compare_on_photos(
            FLAGS.work_dir, FLAGS.photo_dir, dataclasses.replace(size, seed=int(seed))
        )
        print(json.dumps(result), flush=True)
        results.append(result)
    summary = pb.summarize(results)
    print(json.dumps({"summary": summary}), flush=True)
    if FLAGS.markdown:
        print(pb.markdown_table(summary))


def main(argv):
    cli.reject_extra_args(argv)
    if FLAGS.data == "photos":
        cli.require_flags("photo_dir")
        _photos()
        return
    from transfer_tf.benchmarks.transfer import BenchmarkSize, compare_transfer, markdown_table

    size = dataclasses.replace(
        BenchmarkSize(),
        image_size=FLAGS.image_size or 48,
        pretrain_steps=FLAGS.pretrain_steps,
        budget_steps=FLAGS.budget_steps or 200,
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
