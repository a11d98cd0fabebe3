"""The benchmark binaries' run_from_flags on parsed copies of their own flags: usage errors
before any work, benchmark_input's children get the parsed flags, --table leaves the flags alone."""

from __future__ import annotations

import copy
import importlib
import json
import subprocess
import sys

import pytest
from absl import flags

from transfer_tf.errors import UsageError


def _parsed(module: str, args: list[str]) -> tuple[object, flags.FlagValues, list[str]]:
    """The binary, a parsed copy of its FLAGS (the binary's own stay unparsed) and absl's argv."""
    binary = importlib.import_module(module)
    flag_values = copy.deepcopy(binary.FLAGS)
    argv = flag_values([module, *args])
    return binary, flag_values, argv


def _call(module: str, args: list[str]) -> str | None:
    binary, flag_values, argv = _parsed(module, args)
    return binary.run_from_flags(flag_values, argv)


@pytest.mark.parametrize(
    "module, args, error",
    [
        ("pipelines.benchmark_coco_tfrecords", ["--scale=2"], r"--scale must be in \(0, 1\]"),
        ("pipelines.benchmark_coco_tfrecords", ["--masks=maybe"], "--masks: expected true/false"),
        ("pipelines.benchmark_coco_tfrecords", ["--workers=a"], "--workers: expected integers"),
        ("pipelines.benchmark_export", ["--batch_size=0"], "--batch_size: expected a positive"),
        ("pipelines.benchmark_input", [], "--file_pattern is required"),
        ("pipelines.benchmark_input", ["--file_pattern=x", "--measure=no"], "--measure must be"),
        (
            "pipelines.benchmark_input",
            ["--file_pattern=x", "--compare_model_garden"],
            "--compare_model_garden needs --model_garden_path",
        ),
        ("pipelines.benchmark_read_buffer", [], "--file_pattern is required"),
        (
            "pipelines.benchmark_read_buffer",
            ["--file_pattern=x", "--buffer_sizes_kib=256,big"],
            "--buffer_sizes_kib: expected integers",
        ),
        ("pipelines.benchmark_tfrecords", ["--workers=1,a"], "--workers: expected integers"),
        ("pipelines.benchmark_training", ["--variants=loop_fp8"], "--variants: unknown 'loop_fp8'"),
        ("pipelines.benchmark_training", ["--image_sizes=big"], "--image_sizes/--steps_by_size"),
        ("pipelines.benchmark_transfer", ["--data=photos"], "--photo_dir is required"),
        (
            "pipelines.benchmark_transfer",
            ["--data=photos", "--photo_dir=p", "--arm=nocolon"],
            "--arm=nocolon: expected NAME:KEY=V;KEY=V",
        ),
        ("pipelines.make_benchmark_shards", [], "--output_dir is required"),
        ("pipelines.make_benchmark_shards", ["--output_dir=o"], "--photo_dir is required"),
        ("pipelines.make_benchmark_shards", ["--output_dir=o", "stray"], "unexpected argument"),
    ],
)
def test_usage_errors_come_before_any_work(module, args, error):
    with pytest.raises(UsageError, match=error):
        _call(module, args)


def test_benchmark_input_children_get_the_parsed_flags(monkeypatch):
    binary, flag_values, argv = _parsed(
        "pipelines.benchmark_input",
        ["--file_pattern=tfds:x", "--batch_size=4", "--rounds=2", "--noisolate", "--isolate"],
    )
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        rate = {"images_per_sec": 10.0, "images_per_cpu_sec": 5.0}
        return subprocess.CompletedProcess(command, 0, stdout=json.dumps(rate) + "\n", stderr="")

    monkeypatch.setattr(binary.subprocess, "run", fake_run)
    # What the parent was started with does not reach the children: the parsed flags do.
    monkeypatch.setattr(sys, "argv", ["benchmark_input", "--batch_size=999"])
    result = json.loads(binary.run_from_flags(flag_values, argv))
    child = [sys.executable, "-m", "pipelines.benchmark_input"]
    expected = [*child, "--batch_size=4", "--file_pattern=tfds:x", "--rounds=2", "--measure=ours"]
    assert commands == [expected, expected]  # tfds: has no decode ceiling; one child per round
    assert result["images_per_sec"] == 10.0 and result["isolated"] is True


def test_benchmark_training_table_preset_leaves_the_parsed_flags_alone():
    binary, flag_values, _ = _parsed("pipelines.benchmark_training", ["--table", "--repeats=3"])
    settings = binary.settings_from_flags(flag_values)
    assert settings.image_sizes == ["32", "64", "128", "224"] and settings.warmup == 1
    assert settings.repeats == 3  # not part of the preset
    assert flag_values.image_sizes == ["64"] and flag_values.warmup == 2
