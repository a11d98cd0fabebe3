"""Input pipeline throughput: `python -m pipelines.benchmark_input --file_pattern='DIR/train-*'`.

Prints one JSON line with `images_per_sec` (our pipeline, median of `--rounds`), and, in the same
run and interleaved round by round, Model Garden 2.20's classification_input pipeline on the same
shards (`--compare_model_garden --model_garden_path=DIR`, a scratch copy of the unpacked
tf-models-official wheel; see DESIGN.md) and the raw JPEG full-decode ceiling on every core.
Rates per process CPU-second are reported too: they are steadier on a shared machine.
`--two_views=simclr|byol` also times the self-supervised two-view pipeline (`ssl.views`, the same
shards, labels ignored) beside ours, interleaved: `two_views_images_per_sec` counts source images
(each gives two views).

With `--isolate` (the default) every timing round of every pipeline runs in a fresh child
process (this binary with `--measure=NAME`): timed back to back in one process, a pipeline ran
10-20% slower after another one (thread pools and buffers outlive their iterators), which
skewed whichever pipeline came second.
"""

import json
import statistics
import subprocess
import sys
from collections.abc import Callable

from absl import flags, logging

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "file_pattern",
    None,
    "TFRecord shards (comma-separated globs or tfds:NAME).",
    flag_values=FLAGS,
)
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Which pipeline to time.", flag_values=FLAGS)
flags.DEFINE_enum(
    "schema", "classification", ["classification", "coco"], "Shard schema.", flag_values=FLAGS
)
flags.DEFINE_integer("image_size", 224, "Output image size.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Batch size.", flag_values=FLAGS)
flags.DEFINE_integer("num_images", 3000, "Images timed per round and pipeline.", flag_values=FLAGS)
flags.DEFINE_integer(
    "rounds", 3, "Interleaved timing rounds (the median is reported).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "warmup_batches",
    20,
    "Batches drawn before timing (tf.data autotuning ramps up over these).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "num_classes", 1000, "Classes (labels must fit after label_offset).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "label_offset", 1, "Stored label minus this is the class index.", flag_values=FLAGS
)
flags.DEFINE_string("label_map_file", "", "COCO label map JSON (coco schema).", flag_values=FLAGS)
flags.DEFINE_integer(
    "shuffle_buffer", 1000, "Record shuffle buffer (both pipelines).", flag_values=FLAGS
)
flags.DEFINE_bool(
    "skip_corrupt",
    False,
    "Time our skip mode (per-record shard/index bookkeeping) instead.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "random_rotation_degrees",
    0.0,
    "Our pipeline: data.random_rotation_degrees (0 = off).",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "color_jitter",
    ["0", "0", "0", "0"],
    "Our pipeline: data.color_jitter, brightness,contrast,saturation,hue (0 = off).",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "two_views",
    "",
    ["", "simclr", "byol"],
    "Also time the two-view pipeline of this SSL method (ssl.views preset) on the same shards.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "compare_model_garden", False, "Also time Model Garden's pipeline.", flag_values=FLAGS
)
flags.DEFINE_string(
    "model_garden_path",
    "",
    "Folder holding Model Garden's `official` package.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "decode_ceiling", True, "Also time full JPEG decode of the same images.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "isolate", True, "Time each round of each pipeline in a fresh process.", flag_values=FLAGS
)
flags.DEFINE_string(
    "measure",
    "",
    "Internal (--isolate): time this one pipeline once, print JSON.",
    flag_values=FLAGS,
)
# Flags a parent does not pass on to the child that times one pipeline (it sets --measure).
_PARENT_ONLY = ("measure", "isolate")
_PIPELINES = ("ours", "two_views", "model_garden", "decode_ceiling")


def _model_garden_dataset(
    model_garden_path: str,
    files: list[str],
    training: bool,
    image_size: int,
    batch_size: int,
    shuffle_buffer: int,
):
    """Model Garden's classification pipeline as its InputReader assembles it for ImageNet:
    file shuffle, interleave (cycle 10, as many parallel calls), record shuffle, decoder map,
    parser map (both AUTOTUNE), batch, prefetch."""
    import tensorflow as tf

    sys.path.insert(0, model_garden_path)
    try:
        from official.vision.dataloaders import classification_input
    except ImportError as e:
        raise cli.UsageError(
            f"--model_garden_path='{model_garden_path}': cannot import Model Garden ({e})"
        ) from None
    decoder = classification_input.Decoder()
    parser = classification_input.Parser(output_size=[image_size, image_size], num_classes=1001)
    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files)).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset, cycle_length=10, num_parallel_calls=10, deterministic=False
    )
    if training:
        ds = ds.shuffle(shuffle_buffer)
    else:
        ds = ds.repeat()
    ds = ds.map(decoder.decode, num_parallel_calls=autotune)
    ds = ds.map(parser.parse_fn(training), num_parallel_calls=autotune)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(autotune)
    options = tf.data.Options()
    options.deterministic = False
    return ds.with_options(options)


def _color_jitter(flag_values: flags.FlagValues) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in flag_values.color_jitter)
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0:
        raise cli.UsageError(
            f"--color_jitter: expected 4 numbers >= 0 (brightness,contrast,saturation,hue), "
            f"got {','.join(flag_values.color_jitter)}"
        )
    return values  # type: ignore[return-value]


def _measure_once(flag_values: flags.FlagValues, name: str) -> dict:
    """Builds pipeline `name` in this process and times it once."""
    from transfer_tf.benchmarks import input_throughput as throughput
    from transfer_tf.config import DataConfig
    from transfer_tf.data import input as input_lib
    from transfer_tf.data.files import list_files

    if name in ("ours", "two_views"):
        data_cfg = DataConfig(
            train_pattern=flag_values.file_pattern,
            eval_pattern=flag_values.file_pattern,
            schema=flag_values.schema,
            num_classes=flag_values.num_classes,
            label_offset=flag_values.label_offset,
            label_map_file=flag_values.label_map_file,
            image_size=flag_values.image_size,
            shuffle_buffer=flag_values.shuffle_buffer,
            on_corrupt_record="skip" if flag_values.skip_corrupt else "error",
            random_rotation_degrees=flag_values.random_rotation_degrees,
            color_jitter=_color_jitter(flag_values),
        )
        views = None
        if name == "two_views":
            from transfer_tf.config import ExperimentConfig, SSLConfig
            from transfer_tf.ssl.views import views_fn

            views = views_fn(
                ExperimentConfig(data=data_cfg, ssl=SSLConfig(method=flag_values.two_views))
            )
        dataset = input_lib.build_dataset(
            data_cfg,
            split=flag_values.mode,
            global_batch_size=flag_values.batch_size,
            repeat=True,
            views=views,
        )
        if views is not None:  # ((view1, view2), labels) -> view1 batches: source images counted
            dataset = dataset.map(lambda pair, labels: pair)
    elif name == "model_garden":
        dataset = _model_garden_dataset(
            flag_values.model_garden_path,
            list_files(flag_values.file_pattern),
            flag_values.mode == "train",
            flag_values.image_size,
            flag_values.batch_size,
            flag_values.shuffle_buffer,
        )
    else:
        images = throughput.load_encoded_images(flag_values.file_pattern, flag_values.num_images)
        dataset = throughput.decode_ceiling_dataset(images, flag_values.batch_size)
    return throughput.measure(dataset, flag_values.num_images, flag_values.warmup_batches)


def _child_args(flag_values: flags.FlagValues) -> list[str]:
    """The flags that differ from their defaults, as command-line arguments: the child then
    parses what `flag_values` holds, whoever parsed or set it (not this process's sys.argv)."""
    args = []
    for name in sorted(flag_values):
        flag = flag_values[name]
        if name in _PARENT_ONLY or flag.value == flag.default:
            continue
        args.extend(line for line in flag.serialize().split("\n") if line)
    return args


def _measure_in_child(flag_values: flags.FlagValues, name: str) -> dict:
    """Runs this binary with `--measure=name` (same flags) and reads its JSON line."""
    command = [
        sys.executable,
        "-m",
        "pipelines.benchmark_input",
        *_child_args(flag_values),
        f"--measure={name}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise cli.UsageError(f"timing {name} in a child process failed: {tail}")
    return json.loads(lines[-1])


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> str:
    """Times the pipelines as the parsed flags say (`argv`: absl's, the program name first);
    returns the binary's stdout: the rates and ratios as one JSON line (with --measure, the one
    timing as one JSON line, which the parent reads)."""
    cli.reject_extra_args(argv)
    cli.require_flags("file_pattern", flag_values=flag_values)
    if flag_values.measure:
        if flag_values.measure not in _PIPELINES:
            raise cli.UsageError(f"--measure must be one of {', '.join(_PIPELINES)}")
        return json.dumps(_measure_once(flag_values, flag_values.measure))
    if flag_values.compare_model_garden and not flag_values.model_garden_path:
        raise cli.UsageError("--compare_model_garden needs --model_garden_path")
    if not flag_values.file_pattern.startswith("tfds:"):
        from transfer_tf.data.files import list_files

        list_files(flag_values.file_pattern)  # fail here, not in the first child
    pipelines = ["ours"]
    if flag_values.two_views:
        if flag_values.mode != "train":
            raise cli.UsageError("--two_views times the training pipeline: use --mode=train")
        pipelines.append("two_views")
    if flag_values.compare_model_garden:
        pipelines.append("model_garden")
    if flag_values.decode_ceiling and not flag_values.file_pattern.startswith("tfds:"):
        pipelines.append("decode_ceiling")
    measure: Callable[[flags.FlagValues, str], dict] = (
        _measure_in_child if flag_values.isolate else _measure_once
    )

    rounds = {name: [] for name in pipelines}
    for r in range(flag_values.rounds):
        for name in pipelines:
            rate = measure(flag_values, name)
            rounds[name].append(rate)
            logging.info(
                "round %d %s: %.0f images/s (%.0f per CPU-s)",
                r,
                name,
                rate["images_per_sec"],
                rate["images_per_cpu_sec"],
            )

    def median(name, key):
        return round(statistics.median(x[key] for x in rounds[name]), 1)

    def ratio(other, key):
        per_round = [a[key] / b[key] for a, b in zip(rounds["ours"], rounds[other], strict=True)]
        return round(statistics.median(per_round), 3)

    result = {
        "mode": flag_values.mode,
        "schema": flag_values.schema,
        "image_size": flag_values.image_size,
        "batch_size": flag_values.batch_size,
        "num_images": flag_values.num_images,
        "rounds": flag_values.rounds,
        "skip_corrupt": flag_values.skip_corrupt,
        "random_rotation_degrees": flag_values.random_rotation_degrees,
        "color_jitter": list(_color_jitter(flag_values)),
        "isolated": flag_values.isolate,
        "images_per_sec": median("ours", "images_per_sec"),
        "images_per_cpu_sec": median("ours", "images_per_cpu_sec"),
    }
    if flag_values.two_views:
        result["two_views"] = flag_values.two_views
    for other in ("two_views", "model_garden", "decode_ceiling"):
        if other in rounds:
            result[f"{other}_images_per_sec"] = median(other, "images_per_sec")
            result[f"{other}_images_per_cpu_sec"] = median(other, "images_per_cpu_sec")
            result[f"ratio_vs_{other}"] = ratio(other, "images_per_sec")
            result[f"ratio_vs_{other}_cpu"] = ratio(other, "images_per_cpu_sec")
    return json.dumps(result)


def main(argv: list[str]) -> None:
    print(run_from_flags(FLAGS, argv), flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
