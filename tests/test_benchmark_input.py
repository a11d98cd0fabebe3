"""pipelines/benchmark_input.py on tiny shards: one JSON line, each pipeline timed in a child."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_input_data import write_classification_shards

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_input_prints_rates_and_ratios_from_isolated_children(tmp_path):
    write_classification_shards(str(tmp_path), num_shards=2, per_shard=8)
    command = [
        sys.executable,
        "-m",
        "pipelines.benchmark_input",
        f"--file_pattern={tmp_path}/train-*",
        "--image_size=32",
        "--batch_size=4",
        "--num_images=16",
        "--warmup_batches=1",
        "--rounds=1",
        "--num_classes=5",
        "--shuffle_buffer=4",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["isolated"] is True and result["images_per_sec"] > 0
    assert result["decode_ceiling_images_per_sec"] > 0 and result["ratio_vs_decode_ceiling"] > 0

    bad = subprocess.run(
        [*command[:3], "--file_pattern=/nonexistent/x-*"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error:")
    assert "/nonexistent/x-*" in bad.stderr
