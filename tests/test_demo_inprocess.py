"""The demo's in-process calls: each binary's own `run_from_flags` on the binary's own flags."""

import copy
import glob
import importlib
import logging as std_logging
import os

import pytest
from absl import flags

from transfer_tf.datagen import shapes
from transfer_tf.demo import inprocess, plan
from transfer_tf.demo.stages import run_stage

BINARIES = (
    "pipelines.make_imagenet_tfrecords",
    "pipelines.make_coco_tfrecords",
    "pipelines.pretrain",
    "pipelines.finetune",
    "pipelines.evaluate",
    "pipelines.export",
    "pipelines.predict",
)


PIPELINES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines")


def test_binaries_import_into_one_process():
    # Flags on absl's global FlagValues made the second binary's --config a duplicate.
    binaries = [importlib.import_module(m) for m in BINARIES]
    assert all(inprocess.supports(m) for m in BINARIES)
    assert len({id(b.FLAGS) for b in binaries} | {id(flags.FLAGS)}) == len(BINARIES) + 1


def test_every_binary_imports_into_one_process_and_exposes_run_from_flags():
    # Listed from the folder, so that a new binary is held to the pattern without editing this.
    # __main__.py is the package's entry point (`python -m pipelines JOB`), not a binary.
    names = sorted(
        n[:-3]
        for n in os.listdir(PIPELINES)
        if n.endswith(".py") and n not in ("__init__.py", "__main__.py")
    )
    binaries = {n: importlib.import_module(f"pipelines.{n}") for n in names}
    assert set(BINARIES) < {f"pipelines.{n}" for n in names}
    assert len({id(b.FLAGS) for b in binaries.values()} | {id(flags.FLAGS)}) == len(names) + 1
    assert all(callable(b.main) and callable(b.run) for b in binaries.values())
    # The demo drives the other binaries and has no library call of its own to reuse: main only.
    without = [n for n, b in binaries.items() if not callable(getattr(b, "run_from_flags", None))]
    assert without == ["demo"]


@pytest.mark.parametrize("module", BINARIES)
def test_in_process_call_runs_the_binary_function_on_its_parsed_flags(module, monkeypatch):
    binary = importlib.import_module(module)
    seen = []

    def job(flag_values, argv):
        seen.append((flag_values, argv))
        return "what main prints"

    monkeypatch.setattr(binary, "run_from_flags", job)
    assert inprocess.run_call(module, ["positional"]) == "what main prints"
    ((flag_values, argv),) = seen
    assert argv == [module, "positional"]
    # A parsed copy at the binary's defaults; the binary's own FLAGS stay unparsed.
    assert sorted(flag_values) == sorted(binary.FLAGS) and not binary.FLAGS.is_parsed()
    assert all(flag_values[n].value == binary.FLAGS[n].default for n in flag_values)
    # Only the binary's own flags are accepted, by its own parser.
    with pytest.raises(flags.UnrecognizedFlagError, match="no_such_flag"):
        inprocess.run_call(module, ["--no_such_flag=1"])


def test_in_process_call_ignores_values_left_on_the_binarys_parsed_flags(monkeypatch, caplog):
    # A caller in this process that parsed the binary's own FLAGS (a test did) must not hand its
    # values to the next call: the copy used to keep them (another run's --eval_pattern).
    binary = importlib.import_module("pipelines.evaluate")
    parsed = copy.deepcopy(binary.FLAGS)
    parsed(["evaluate", "--model_dir=old_run", "--eval_pattern=old_shards/train-*"])
    monkeypatch.setattr(binary, "FLAGS", parsed)
    seen = []
    monkeypatch.setattr(binary, "run_from_flags", lambda fv, argv: seen.append(fv) or "ok")
    caplog.set_level(std_logging.INFO)  # absl's flags module logs to the root logger
    assert inprocess.run_call("pipelines.evaluate", ["--model_dir=new_run"]) == "ok"
    assert "unparse_flags" not in caplog.text  # no absl line per call on the demo's console
    assert seen[0].model_dir == "new_run" and seen[0].eval_pattern is None
    assert parsed.eval_pattern == "old_shards/train-*"  # the caller's parse is left alone


def test_in_process_build_keeps_the_binary_default_of_an_omitted_flag(tmp_path):
    raw = shapes.write_coco_like(
        str(tmp_path / "raw"), num_images=3, category_ids=(1, 2), image_size_range=(32, 40)
    )
    common = [
        f"--image_dir={raw.root}/images",
        f"--object_annotations_file={raw.root}/instances.json",
    ]
    module = "pipelines.make_coco_tfrecords"
    inprocess.run_call(
        module, [*common, f"--output_file_prefix={tmp_path}/a/train", "--num_shards=2"]
    )
    # No --num_shards: the binary's default (32), not the previous call's 2.
    inprocess.run_call(module, [*common, f"--output_file_prefix={tmp_path}/b/train"])
    assert len(glob.glob(f"{tmp_path}/a/train-*")) == 2
    assert len(glob.glob(f"{tmp_path}/b/train-*")) == 32


def test_in_process_stdout_goes_where_a_child_stdout_goes(tmp_path, monkeypatch):
    binary = importlib.import_module("pipelines.predict")
    monkeypatch.setattr(binary, "run_from_flags", lambda flag_values, argv: '{\n  "doc": 1\n}')
    call = ("pipelines.predict", ["--saved_model=x", "--json", "img.jpg"])
    out = tmp_path / "metrics" / "predict.json"
    shown = []
    to_file = plan.Stage("predict", "Predict", [call], stdout_file=str(out))
    assert run_stage(to_file, str(tmp_path / "a.log"), shown.append, in_process=True).status == "ok"
    # Like a child's --json stdout: the file and the log get it, the console does not.
    assert out.read_text() == '{\n  "doc": 1\n}\n'
    assert '"doc": 1' in (tmp_path / "a.log").read_text() and not shown
    to_log = plan.Stage("predict", "Predict", [call])
    assert run_stage(to_log, str(tmp_path / "b.log"), shown.append, in_process=True).status == "ok"
    assert shown == ["  [predict] {", '  [predict]   "doc": 1', "  [predict] }"]
