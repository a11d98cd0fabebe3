"""TensorFlow's oneDNN CPU kernels on every x86 CPU class, set before TensorFlow is imported.

TF 2.21 turns oneDNN on by default only where the CPU has AVX512_VNNI / AVX512_BF16 / AMX; on an
AVX2-only CPU it runs its Eigen kernels instead, and training there is several times slower:
ResNet-18 at 32 px, batch 64, float32 trained at 21.7 images/s with Eigen and 130.6 with oneDNN
on a 2-core AVX2-only EPYC (BENCHMARKS.md, "oneDNN on the avx2-only class"). On the classes where
TF turns it on itself this changes nothing. `TF_ENABLE_ONEDNN_OPTS` read only at TensorFlow's
import, so the binaries (pipelines/__init__.py) and the tests call this first; a user's own
`TF_ENABLE_ONEDNN_OPTS=0` wins (to compare, or for Eigen's exact numerics).

Whether oneDNN is actually on is read back from TensorFlow (`hardware.detect().onednn`) and
recorded in each run's runtime.json and in the XLA probe's cache key.

Example:
    from transfer_tf import onednn
    onednn.enable_before_tensorflow()   # then import tensorflow
"""

from __future__ import annotations

import os
import sys

ENV = "TF_ENABLE_ONEDNN_OPTS"


def enable_before_tensorflow() -> bool:
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` unless the environment already says; returns False (and
    changes nothing) when TensorFlow is already imported, since TF reads the variable only then."""
    if "tensorflow" in sys.modules:
        return False
    os.environ.setdefault(ENV, "1")
    return True
