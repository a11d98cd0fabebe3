"""Binary conventions: one-line usage errors with exit code 2, --helpfull, --flagfile."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_binary(module, *args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def assert_one_line_usage_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_config_key_is_one_line_exit_2(tmp_path):
    proc = run_binary("pipelines.demo", f"--work_dir={tmp_path}", "--set=train.epoch=2")
    assert_one_line_usage_error(proc, "train.epoch", "epochs")


def test_bad_flag_is_one_line_exit_2(tmp_path):
    proc = run_binary("pipelines.demo", "--no_such_flag=1")
    assert_one_line_usage_error(proc, "no_such_flag")


def test_missing_config_file_is_one_line_exit_2(tmp_path):
    proc = run_binary("pipelines.demo", f"--config={tmp_path}/missing.yaml")
    assert_one_line_usage_error(proc, "missing.yaml")


def test_helpfull_and_flagfile(tmp_path):
    proc = run_binary("pipelines.demo", "--helpfull")
    # absl exits 1 after printing help; what matters is that the flags are documented.
    assert "--work_dir" in proc.stdout and "--set" in proc.stdout and "Traceback" not in proc.stderr
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--set=train.epoch=1\n")
    proc = run_binary("pipelines.demo", f"--flagfile={flagfile}", f"--work_dir={tmp_path}")
    assert_one_line_usage_error(proc, "train.epoch")
