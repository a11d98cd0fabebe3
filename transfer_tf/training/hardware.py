"""What the training devices can compute fast: device kind, CPU class, GPU compute capability.

Read once per run to resolve `train.mixed_precision: auto` (precision.choose) and to key the XLA
probe's cache (autotune.py). Nothing here builds a model or runs an op.

Example:
    hw = detect(strategy)      # Hardware(kind="cpu", cpu_class="avx512_bf16", ...)
    hw.fingerprint()           # "cpu:x1:avx512_bf16:AMD EPYC 9R14:2cores:onednn:tf2.21.0"
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import tensorflow as tf

from transfer_tf.errors import UsageError

# CPU classes, from the best native bfloat16 support down (names are the /proc/cpuinfo flags).
CPU_CLASSES = ("amx_bf16", "avx512_bf16", "avx2-only")
# Environment variable that overrides the detected CPU class (one of CPU_CLASSES).
CPU_CLASS_ENV = "TRANSFER_TF_CPU_CLASS"


@dataclass(frozen=True)
class Hardware:
    """The devices a strategy trains on.

    kind: `tpu` | `gpu` | `cpu`. cpu_class: one of CPU_CLASSES (the host CPU, also for GPU/TPU
    runs). gpu_compute_capability: the lowest (major, minor) over the GPUs, None without GPUs.
    onednn: whether TensorFlow runs its oneDNN CPU kernels (several times faster than Eigen's on
    the avx2-only class, so a probe result measured with one says nothing about the other).
    """

    kind: str
    cpu_class: str
    cpu_model: str
    cores: int
    gpu_name: str = ""
    gpu_compute_capability: tuple[int, int] | None = None
    num_devices: int = 1
    onednn: bool = False  # TF's oneDNN CPU kernels on (transfer_tf/onednn.py)

    def fingerprint(self) -> str:
        """A stable key for "the same machine" (what a cached probe result is valid for)."""
        device = (
            f"{self.gpu_name}:cc{self.gpu_compute_capability}x{self.num_devices}"
            if self.kind == "gpu"
            else f"x{self.num_devices}"
        )
        return (
            f"{self.kind}:{device}:{self.cpu_class}:{self.cpu_model}:{self.cores}cores:"
            f"{'onednn' if self.onednn else 'eigen'}:tf{tf.__version__}"
        )

    def describe(self) -> str:
        if self.kind == "gpu":
            cc = ".".join(map(str, self.gpu_compute_capability or ()))
            return f"{self.num_devices} GPU(s) {self.gpu_name} (compute capability {cc})"
        if self.kind == "tpu":
            return f"TPU ({self.num_devices} cores)"
        kernels = "oneDNN" if self.onednn else "Eigen"
        return (
            f"CPU {self.cpu_model} ({self.cores} cores, class {self.cpu_class}, {kernels} kernels)"
        )


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags (Linux /proc/cpuinfo; macOS sysctl features); empty if unknown."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            return {f.lower().replace(".", "_") for f in out.split()}
        except (OSError, subprocess.SubprocessError):
            pass
    return set()


def cpu_class(flags: set[str]) -> str:
    """`amx_bf16` | `avx512_bf16` | `avx2-only` (native bfloat16 matmul, or none)."""
    for name in CPU_CLASSES[:-1]:
        if name in flags:
            return name
    return CPU_CLASSES[-1]


def _cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def onednn_enabled() -> bool:
    """Whether this TensorFlow process runs oneDNN CPU kernels (decided at TF's import)."""
    from tensorflow.python.util import _pywrap_util_port  # the flag TF's own tests read

    return bool(_pywrap_util_port.IsMklEnabled())


def detect(strategy: tf.distribute.Strategy | None = None) -> Hardware:
    """The hardware `strategy` (default: the current one) computes on."""
    strategy = strategy or tf.distribute.get_strategy()
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: the first GPU, else the CPU
        gpus = tf.config.list_logical_devices("GPU")
        devices = [(gpus[0] if gpus else tf.config.list_logical_devices("CPU")[0]).name]
    kinds = {d.split("device:")[-1].split(":")[0].upper() for d in devices}
    # For benchmarking one CPU class on another (with ONEDNN_MAX_CPU_ISA=AVX2 and
    # XLA_FLAGS=--xla_cpu_max_isa=AVX2 the kernels follow; BENCHMARKS.md).
    forced = os.environ.get(CPU_CLASS_ENV, "")
    if forced and forced not in CPU_CLASSES:
        raise UsageError(f"{CPU_CLASS_ENV}={forced!r}: expected one of {', '.join(CPU_CLASSES)}")
    common = dict(
        cpu_class=forced or cpu_class(cpu_flags()),
        cpu_model=_cpu_model(),
        cores=_cores(),
        onednn=onednn_enabled(),
    )
    if "TPU" in kinds:
        return Hardware("tpu", num_devices=len(devices), **common)
    if "GPU" in kinds:
        name, capability = "", None
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            cc = details.get("compute_capability")
            if cc is not None and (capability is None or tuple(cc) < capability):
                capability = tuple(cc)
                name = details.get("device_name", "")
        return Hardware(
            "gpu",
            gpu_name=name,
            gpu_compute_capability=capability,
            num_devices=len(devices),
            **common,
        )
    return Hardware("cpu", num_devices=len(devices), **common)
