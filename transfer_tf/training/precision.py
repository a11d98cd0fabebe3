"""Mixed precision: one global Keras dtype policy, set before the model is built, and the
`train.mixed_precision: auto` rule (the precision the hardware computes natively).

Example:
    choice, why = choose(hardware.detect(strategy))   # ("bfloat16", "CPU ... has avx512_bf16 ...")
    set_policy(choice)   # layers compute in bfloat16, variables stay float32
"""

from __future__ import annotations

import keras

from transfer_tf.training.hardware import Hardware

POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def set_policy(mixed_precision: str) -> str:
    """Sets the global Keras dtype policy for `none|bfloat16|float16`; returns the policy name."""
    policy = POLICIES[mixed_precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def choose(hw: Hardware) -> tuple[str, str]:
    """The `auto` precision for `hw` and why: (`bfloat16`|`float16`|`none`, one-line reason).

    bfloat16 where the hardware computes it natively (TPU; GPU compute capability >= 8.0; CPUs
    with AMX-BF16 or AVX512-BF16); float16 with dynamic loss scaling on GPUs with float16 tensor
    cores only (compute capability 7.x); float32 elsewhere: bfloat16 emulated on an AVX2 CPU ran
    0.88x float32 (BENCHMARKS.md), and GPUs below 7.0 have no tensor cores to gain from float16.
    """
    if hw.kind == "tpu":
        return "bfloat16", "TPU: bfloat16 is its native matmul type"
    if hw.kind == "gpu":
        cc = hw.gpu_compute_capability or (0, 0)
        where = f"GPU {hw.gpu_name or '?'} compute capability {cc[0]}.{cc[1]}"
        if cc >= (8, 0):
            return "bfloat16", f"{where} >= 8.0 has bfloat16 tensor cores"
        if cc >= (7, 0):
            return "float16", f"{where} < 8.0: float16 tensor cores, with dynamic loss scaling"
        return "none", f"{where} < 7.0: no tensor cores, float32"
    if hw.cpu_class != "avx2-only":
        return "bfloat16", f"CPU has {hw.cpu_class}: native bfloat16 matmul"
    return "none", "CPU has neither amx_bf16 nor avx512_bf16: bfloat16 would be emulated, float32"


def candidates(hw: Hardware) -> list[str]:
    """Precisions worth measuring on `hw` (the `auto` choice first, then float32 if different)."""
    best, _ = choose(hw)
    return [best] if best == "none" else [best, "none"]
