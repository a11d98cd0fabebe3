"""Runs a test script on two mirrored logical CPUs and returns the JSON it prints last.

Logical devices must be configured before TensorFlow initialises, so each script runs in a fresh
interpreter, after `PREAMBLE` (two logical CPUs, deterministic ops, the training imports).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PREAMBLE = r"""
import json, tempfile
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from transfer_tf.config import ModelConfig, TrainConfig
from transfer_tf.models.resnet import build_classifier
from transfer_tf.training.loop import Trainer
from transfer_tf.training.losses import softmax_cross_entropy
from transfer_tf.training.optimizers import make_optimizer
from transfer_tf.training.schedules import warmup_constant
from transfer_tf.training.strategy import make_strategy

tf.config.experimental.enable_op_determinism()
"""


def run_on_two_cpus(body: str, timeout: int = 400) -> dict:
    """PREAMBLE + `body` in a fresh process; the JSON object of its last stdout line."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PREAMBLE + body],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
