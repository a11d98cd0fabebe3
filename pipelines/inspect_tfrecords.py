"""Checks TFRecord shards and prints one line of JSON: records, per-label counts, rejected records.

    python -m pipelines.inspect_tfrecords --file_pattern='/data/imagenet/validation-*'
    python -m pipelines.inspect_tfrecords --file_pattern='/data/coco/train-*' \
        --config=configs/coco_multilabel_resnet50.yaml        # judge with that run's data section

Reads shards from this project's builders and from the public tools (imagenet_to_gcs.py,
Model Garden's create_coco_tf_record.py), each file once, and judges every record as training
does (label range after data.label_offset, the COCO label map, data.jpeg_only, a full decode),
with the data section of `--config`/`--set` (default: the config defaults). Exit status 0 even
when records are bad: the JSON says how many (`unparsable`, `bad_label`, `not_jpeg`,
`undecodable`, `corrupt_files`) and shows examples.
"""

from absl import flags

from transfer_tf import cli
from transfer_tf.data.inspect import inspect_tfrecords, summary_line

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "file_pattern", None, "Glob(s) of TFRecord files, comma-separated.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "schema",
    "auto",
    ["auto", "classification", "coco"],
    "Record schema (auto: data.schema of --config, else detected).",
    flag_values=FLAGS,
)
cli.define_config_flags(flag_values=FLAGS)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Inspects the shards as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: the one-line JSON summary."""
    cli.reject_extra_args(argv)
    cli.require_flags("file_pattern", flag_values=flag_values)
    data_cfg = None
    if flag_values.config or flag_values.set:
        data_cfg = cli.load_config_from_flags(flag_values).data
    return summary_line(inspect_tfrecords(flag_values.file_pattern, flag_values.schema, data_cfg))


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
