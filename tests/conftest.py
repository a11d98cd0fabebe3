"""Test-wide setup: oneDNN kernels as in the binaries, and the XLA probe's cache
(transfer_tf/training/autotune.py) in a temporary folder, never in the user's ~/.cache, for
in-process runs and the binaries tests start alike."""

import os
import shutil
import sys
import tempfile

import pytest

from transfer_tf import onednn

# As in the binaries (pipelines/__init__.py): oneDNN kernels in this process and the ones it starts.
onednn.enable_before_tensorflow()

_CACHE_HOME = tempfile.mkdtemp(prefix="transfer_tf_test_cache_")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _op_determinism_stays_in_its_test():
    """Runs with `deterministic: true` turn TF's op determinism on for the whole process; undone
    after each test so later tests on the same xdist worker see TF's default."""
    yield
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import config as tf_config

        if tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()


@pytest.fixture(autouse=True)
def _precision_policy_stays_in_its_test():
    """In-process runs set Keras' global precision policy from their config (`auto`: bfloat16 on
    an AMX or AVX512-BF16 CPU); reset after each test, so that a later test on the same xdist
    worker builds float32 models unless it asks otherwise, whatever the CPU class."""
    yield
    if "keras" in sys.modules:
        import keras

        if keras.mixed_precision.global_policy().name != "float32":
            keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _binary_flags_stay_unparsed():
    """A test that parses a binary's own `FLAGS` leaves its values to every later in-process call
    of that binary on the same xdist worker; tests parse copies (`demo.inprocess.parsed_flags`)."""
    yield
    parsed = [
        name
        for name, module in list(sys.modules.items())
        if name.startswith("pipelines.")
        and hasattr(getattr(module, "FLAGS", None), "is_parsed")
        and module.FLAGS.is_parsed()
    ]
    for name in parsed:  # only the culprit fails, not every later test on the worker
        sys.modules[name].FLAGS.unparse_flags()
    assert not parsed, f"this test left the FLAGS of {parsed} parsed: parse a copy"
