"""oneDNN kernels: the binaries turn them on before TensorFlow's import (TF 2.21 leaves them off on
AVX2-only CPUs, several times slower there), a user's TF_ENABLE_ONEDNN_OPTS wins, and the state
is part of the hardware fingerprint that keys the XLA probe's cache."""

import dataclasses
import os
import subprocess
import sys

from transfer_tf.training import hardware

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = (
    "import pipelines; from transfer_tf.training.hardware import detect; "
    "hw = detect(); print(hw.onednn, hw.describe())"
)


def _binary_process(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_binaries_run_onednn_kernels_unless_the_user_says_otherwise():
    default = _binary_process(None)
    assert default.startswith("True ") and "oneDNN kernels" in default
    off = _binary_process("0")
    assert off.startswith("False ") and "Eigen kernels" in off


def test_probe_cache_keys_differ_by_kernels():
    hw = hardware.Hardware("cpu", "avx2-only", "AMD EPYC", 2, onednn=True)
    eigen = dataclasses.replace(hw, onednn=False)
    assert hw.fingerprint() != eigen.fingerprint()
    assert ":onednn:" in hw.fingerprint() and ":eigen:" in eigen.fingerprint()
