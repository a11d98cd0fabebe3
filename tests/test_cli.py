"""Binary conventions: one-line usage errors with exit code 2, --helpfull, --flagfile.

All cases go through the demo binary's real entry point in one harness process (one TensorFlow
import); the first case is a fresh-process run, start-up noise included.
"""

import pytest
from binary_harness import run_cases


def assert_one_line_usage_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Results of the demo binary on each command line below, keyed by case name."""
    tmp = tmp_path_factory.mktemp("cli")
    flagfile = tmp / "flags.txt"
    flagfile.write_text("--set=train.epoch=1\n")
    cases = {
        "unknown_key": [f"--work_dir={tmp}", "--set=train.epoch=2"],
        "bad_flag": ["--no_such_flag=1"],
        "missing_config": [f"--config={tmp}/missing.yaml"],
        "helpfull": ["--helpfull"],
        "flagfile": [f"--flagfile={flagfile}", f"--work_dir={tmp}"],
    }
    results = run_cases("pipelines.demo:run", list(cases.values()), timeout=120)
    return dict(zip(cases, results, strict=True))


def test_unknown_config_key_is_one_line_exit_2(demo):
    assert_one_line_usage_error(demo["unknown_key"], "train.epoch", "epochs")


def test_bad_flag_is_one_line_exit_2(demo):
    assert_one_line_usage_error(demo["bad_flag"], "no_such_flag")


def test_missing_config_file_is_one_line_exit_2(demo):
    assert_one_line_usage_error(demo["missing_config"], "missing.yaml")


def test_helpfull_and_flagfile(demo):
    proc = demo["helpfull"]
    # absl exits 1 after printing help; what matters is that the flags are documented.
    assert "--work_dir" in proc.stdout and "--set" in proc.stdout and "Traceback" not in proc.stderr
    assert_one_line_usage_error(demo["flagfile"], "train.epoch")
