"""End-to-end demo on generated data (what `make demo` runs).

    python -m pipelines.demo --work_dir=demo_out
    python -m pipelines.demo --work_dir=/tmp/tiny --set=demo.train_per_class=8 --set=data.image_size=32

Generates an ImageNet-like and a COCO-like dataset in their real raw layouts, converts them with the
TFRecord builders, pretrains, fine-tunes (from the pretrained backbone and from scratch), evaluates,
exports a SavedModel and predicts one image through it, each with the project's own binary; then
writes WORK_DIR/report.md with the metrics table, curves (plots/*.png) and every command it ran.
Sizes come from configs/demo.yaml (`demo.*`, `data.*`, `train.*`, `transfer.phases`) and `--set`;
`demo.time_budget_s` (330 s there) trains fewer pretraining epochs when the measured training step
says the configured ones would not fit on this machine (the report says what it chose).
Exit status: 0 when every stage succeeded, 1 when one failed or is not available, 2 on usage errors.
"""

import importlib.util
import os

from absl import flags

from transfer_tf import cli

FLAGS = flags.FlagValues()
cli.define_config_flags(
    default_config=os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml"),
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "work_dir",
    "demo_out",
    "Where the demo writes data, runs and its report (cleared on a rerun).",
    flag_values=FLAGS,
)


def binary_available(module: str) -> bool:
    """Whether `python -m module` finds the binary (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main(argv):
    cli.reject_extra_args(argv)
    cfg = cli.load_config_from_flags(FLAGS)
    from transfer_tf.demo.runner import run_demo

    outcome = run_demo(cfg, FLAGS.work_dir, available=binary_available, echo=_echo)
    _echo("")
    _echo(f"demo finished in {outcome.seconds / 60:.1f} min: {outcome.work_dir}")
    for r in outcome.results:
        _echo(f"  {r.name:<18s} {r.status:<11s} {r.seconds:7.1f}s  {r.detail}")
    for line in outcome.headline:
        _echo(f"  {line}")
    _echo(f"  report: {rel(outcome.report)}")
    for p in outcome.plots:
        _echo(f"  plot:   {rel(p)}")
    _echo(f"  logs:   {rel(os.path.join(outcome.work_dir, 'logs'))}/")
    return 0 if outcome.ok else 1


def rel(path: str) -> str:
    """`path` relative to the current folder when it is inside it, else absolute."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _echo(line: str) -> None:
    print(line, flush=True)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
