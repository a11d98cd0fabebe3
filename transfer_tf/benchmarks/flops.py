"""How close a training step is to the machine: the model's FLOPs and the CPU's peak FLOP/s.

FLOPs are counted, not hard-coded: `step_flops` traces the step (forward, or forward + gradients
of every trainable variable) as a `tf.function` graph at a fixed shape and sums TensorFlow's
registered per-op float-operation statistics over it (`tf.compat.v1.profiler`, the
`float_operation` view; TF 2.21 registers Conv2D, Conv2DBackpropInput/Filter, MatMul, the
pooling ops and the element-wise arithmetic). Convention: 1 multiply-add = 2 FLOPs (a ResNet-50
forward at 224 px is ~3.9 G multiply-adds = ~7.8 GFLOPs); FusedBatchNorm has no registered count
(~1 % of ResNet-50's work) and the optimizer's update is per step, not per image, so neither is in.

The peak (`cpu_peak`) is read from /proc/cpuinfo: usable cores x float32 FMA lanes per cycle x 2
(an FMA is 2 FLOPs) x clock. Assumptions (all in the returned dict): two FMA units per core (every
x86 server core of the last decade: Intel Haswell+, AMD Zen 2+); the FMA datapath is 512 bits on
Intel with avx512f and on AMD family >= 0x1a (Zen 5), 256 bits otherwise (Zen 4 splits AVX-512 into
two 256-bit halves; avx2/fma CPUs); the clock is /proc/cpuinfo's `cpu MHz` (a VM shows the base
clock: a turbo clock would make the real peak higher); a usable CPU is a full core unless
`siblings` > `cpu cores` says SMT (then 2 CPUs share one core's FMA units). float32 only:
AVX512-BF16 dot products and AMX tiles can exceed it in bfloat16.

Example:
    flops = step_flops(model, image_size=224, training=True)   # per image
    peak = cpu_peak()                                           # {"peak_gflops": 166.1, ...}
"""

from __future__ import annotations

import os
from typing import Any

CONVENTION = "1 multiply-add = 2 FLOPs; TF profiler op counts; batch norm and optimizer excluded"


def graph_flops(graph: Any) -> int:
    """Float operations of every op in `graph` with a registered count (tf.compat.v1.profiler)."""
    import tensorflow as tf

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def step_flops(model: Any, image_size: int, training: bool = True, batch: int = 1) -> float:
    """FLOPs per image of `model` on uint8 [batch, S, S, 3] images: the forward pass, or with
    `training` the forward pass in training mode plus the gradients of every trainable variable
    (a softmax cross-entropy loss on the logits), as one traced graph."""
    import tensorflow as tf

    spec = tf.TensorSpec([batch, image_size, image_size, 3], tf.uint8)

    def forward(images):
        return model(images, training=False)

    def train_step(images):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            labels = tf.one_hot(tf.zeros([batch], tf.int32), logits.shape[-1])
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, model.trainable_variables)

    fn = tf.function(train_step if training else forward, autograph=False)
    return graph_flops(fn.get_concrete_function(spec).graph) / batch


def _cpuinfo(path: str) -> list[dict[str, str]]:
    """One {field: value} per processor block of a /proc/cpuinfo-format file."""
    blocks, current = [], {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                if current:
                    blocks.append(current)
                current = {}
                continue
            key, _, value = line.partition(":")
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def cpu_peak(cpuinfo_path: str = "/proc/cpuinfo", cpus: int | None = None) -> dict[str, Any]:
    """The CPU's float32 peak GFLOP/s as estimated from `cpuinfo_path` (the module docstring
    lists the assumptions); `cpus`: usable CPUs (default: this process's affinity)."""
    blocks = _cpuinfo(cpuinfo_path)
    if not blocks:
        raise ValueError(f"{cpuinfo_path}: no processor entries")
    first = blocks[0]
    flags = set(first.get("flags", "").split())
    vendor = first.get("vendor_id", "")
    family = int(first.get("cpu family", "0") or 0)
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else len(blocks)
    siblings, per_socket = int(first.get("siblings", 1)), int(first.get("cpu cores", 1))
    threads_per_core = max(1, siblings // max(1, per_socket))
    cores = max(1.0, cpus / threads_per_core)
    ghz = max(float(b.get("cpu MHz", 0) or 0) for b in blocks) / 1000
    if "avx512f" in flags and (vendor != "AuthenticAMD" or family >= 0x1A):
        bits, width_note = 512, "512-bit FMA datapath (avx512f)"
    elif "avx512f" in flags:
        bits, width_note = 256, "256-bit FMA datapath (AMD before Zen 5 splits AVX-512 in two)"
    elif "fma" in flags or "avx2" in flags:
        bits, width_note = 256, "256-bit FMA datapath (avx2/fma)"
    else:
        bits, width_note = 128, "128-bit SSE, no FMA counted as 2 ops"
    fma_units, lanes = 2, bits // 32
    per_cycle = fma_units * lanes * 2
    return {
        "peak_gflops": round(cores * per_cycle * ghz, 1),
        "cores": cores,
        "ghz": round(ghz, 3),
        "fp32_flops_per_cycle_per_core": per_cycle,
        "formula": f"{cores:g} cores x {fma_units} FMA units x {lanes} fp32 lanes x 2 x {ghz:.2f} GHz",
        "assumptions": [
            width_note,
            f"{fma_units} FMA units per core",
            "clock = /proc/cpuinfo 'cpu MHz' (a VM shows base clock; turbo would raise the peak)",
            f"{threads_per_core} hardware thread(s) per core (siblings / cpu cores)",
            "float32 FMA only: bfloat16 dot products (avx512_bf16) and AMX can exceed it",
        ],
    }


def fraction_of_peak(
    images_per_sec: float,
    flops_per_image: float,
    peak_gflops: float,
    cpu_seconds_per_image: float | None = None,
    cores: float | None = None,
) -> dict:
    """{"achieved_gflops", "fraction_of_peak"} of a measured rate; with the process CPU seconds
    per image and the cores, also "fraction_of_peak_per_cpu_second": the FLOPs done per CPU
    second over one core's peak, which other jobs on a shared machine barely move (wall time
    counts the seconds they took from us; CPU time does not)."""
    achieved = images_per_sec * flops_per_image / 1e9
    out = {
        "achieved_gflops": round(achieved, 2),
        "fraction_of_peak": round(achieved / peak_gflops, 3) if peak_gflops else None,
    }
    if cpu_seconds_per_image and cores and peak_gflops:
        per_core = flops_per_image / cpu_seconds_per_image / 1e9
        out["fraction_of_peak_per_cpu_second"] = round(per_core / (peak_gflops / cores), 3)
    return out
