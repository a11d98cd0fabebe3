"""Runs a demo stage's binary calls inside the demo process, through the library calls the
binaries make (`run_pretraining`, `run_finetuning`, `evaluate_run`, `export_saved_model`,
`Predictor`), so TensorFlow starts once for the whole demo instead of once per stage.

A call is still described by its binary command (`pipelines.pretrain --config=... --model_dir=...`,
see plan.py): this module reads the same flags, so the report's commands reproduce the stage by
hand; a flag the demo does not write keeps its binary's default.

Example:
    if supports(module):
        with captured_logs(log_file, echo, prefix="  [pretrain] "):
            run_call(module, args, stdout_file=None)
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging as std_logging
from collections.abc import Callable, Iterator

from absl import logging

from transfer_tf.atomic_io import write_text_atomic
from transfer_tf.errors import UsageError

_MODULES = (
    "pipelines.make_imagenet_tfrecords",
    "pipelines.make_coco_tfrecords",
    "pipelines.pretrain",
    "pipelines.finetune",
    "pipelines.evaluate",
    "pipelines.export",
    "pipelines.predict",
)


def supports(module: str) -> bool:
    """Whether `module`'s job can run in this process."""
    return module in _MODULES


def parse_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """`["--a=1", "x.jpg"]` -> ({"a": "1"}, ["x.jpg"]); the demo only writes `--key=value` flags."""
    flags, positional = {}, []
    for arg in args:
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            if not sep:
                value = "true"
            flags[key] = value
        else:
            positional.append(arg)
    return flags, positional


def _build(module: str, flags: dict[str, str]) -> None:
    # The builders fork their workers (as their binaries do), before this process has run any
    # TensorFlow op: the demo builds its TFRecords first.
    from transfer_tf.data.builders import WriteOptions, build_coco, build_imagenet

    options = WriteOptions(int(flags.get("num_workers", 1)))
    if module == "pipelines.make_imagenet_tfrecords":
        manifest = build_imagenet(
            flags["raw_data_dir"],
            flags["output_dir"],
            train_shards=int(flags["train_shards"]),
            validation_shards=int(flags["validation_shards"]),
            synset_names_file=flags.get("synset_names_file", ""),
            seed=int(flags.get("seed", 0)),
            options=options,
        )
    else:
        manifest = build_coco(
            [flags["image_dir"]],
            flags["object_annotations_file"],
            flags["output_file_prefix"],
            num_shards=int(flags["num_shards"]),
            options=options,
        )
    logging.info("Manifest: %s", manifest)


def run_call(module: str, args: list[str], stdout_file: str | None = None) -> None:
    """Does what `python -m module *args` does; raises (UsageError or any error) on failure.

    `stdout_file` receives what the binary would print on stdout (predict's --json document).
    """
    from transfer_tf.config import load_config

    flags, positional = parse_args(args)
    if module in ("pipelines.make_imagenet_tfrecords", "pipelines.make_coco_tfrecords"):
        _build(module, flags)
    elif module == "pipelines.pretrain":
        from transfer_tf.training.pretrain import run_pretraining

        logs = run_pretraining(load_config(flags["config"]), flags["model_dir"])
        logging.info("done: %s", logs)
    elif module == "pipelines.finetune":
        from transfer_tf.transfer.finetune import run_finetuning

        result = run_finetuning(
            load_config(flags["config"]),
            flags["model_dir"],
            init_checkpoint=flags.get("init_checkpoint"),
        )
        metrics = {k: v for k, v in result["eval"].items() if not isinstance(v, list)}
        logging.info("done at global step %d: %s", result["global_step"], metrics)
    elif module == "pipelines.evaluate":
        from transfer_tf.training.evaluation import evaluate_run

        metrics = evaluate_run(flags["model_dir"], eval_pattern=flags.get("eval_pattern", ""))
        write_text_atomic(flags["output"], json.dumps(metrics, indent=2))
        logging.info("%s", {k: v for k, v in metrics.items() if not isinstance(v, list)})
    elif module == "pipelines.export":
        from transfer_tf.export.saved_model import export_saved_model
        from transfer_tf.training.checkpoints import load_model

        model, cfg = load_model(flags["model_dir"])
        path = export_saved_model(model, cfg, flags["export_dir"])
        logging.info("Exported %s to %s", flags["model_dir"], path)
    elif module == "pipelines.predict":
        from transfer_tf.export.predict import Predictor, check_image_paths, format_text

        check_image_paths(positional)
        predictor = Predictor(flags["saved_model"])
        predictions = predictor.predict_files(positional)
        logging.info("%s", format_text(predictions))
        if stdout_file:
            doc = {
                "saved_model": predictor.version_dir,
                "predictions": [p.to_dict() for p in predictions],
            }
            write_text_atomic(stdout_file, json.dumps(doc, indent=2))
    else:
        raise UsageError(f"{module} has no in-process runner (run it as a subprocess)")


def release_models() -> None:
    """Drops Keras' global graph state between stages (models of earlier stages are garbage)."""
    import keras

    keras.backend.clear_session()
    gc.collect()


class _LineHandler(std_logging.Handler):
    def __init__(self, write: Callable[[str], None]):
        super().__init__()
        self._write = write
        self.setFormatter(logging.PythonFormatter())

    def emit(self, record: std_logging.LogRecord) -> None:
        try:
            for line in self.format(record).splitlines():
                self._write(line)
        except Exception:  # noqa: BLE001  (a log line must never fail the stage)
            self.handleError(record)


@contextlib.contextmanager
def captured_logs(write_line: Callable[[str], None]) -> Iterator[None]:
    """Within the block, absl log lines (absl-formatted, one string per line) go to `write_line`
    instead of stderr, as a child's output would reach its stage log."""
    handler = _LineHandler(write_line)
    # absl's (the jobs' progress) and TensorFlow's Python loggers: what a child writes to stderr.
    loggers = [logging.get_absl_logger(), std_logging.getLogger("tensorflow")]
    previous = [(lg.propagate, lg.level, lg.handlers) for lg in loggers]
    for lg in loggers:
        # Only ours: TensorFlow's logger may carry its own stderr handler.
        lg.handlers = [handler]
        lg.propagate = False
    # INFO lines are the progress, whatever the demo process's own verbosity is.
    loggers[0].setLevel(std_logging.INFO)
    try:
        yield
    finally:
        for lg, (propagate, level, handlers) in zip(loggers, previous, strict=True):
            lg.handlers = handlers
            lg.propagate = propagate
            lg.setLevel(level)
