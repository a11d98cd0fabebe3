"""Test-wide setup: the XLA probe's cache (transfer_tf/training/autotune.py) lives in a temporary
folder, never in the user's ~/.cache, for in-process runs and the binaries tests start alike."""

import os
import shutil
import tempfile

_CACHE_HOME = tempfile.mkdtemp(prefix="transfer_tf_test_cache_")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_HOME, ignore_errors=True)
