"""Mixed precision: one global Keras dtype policy, set before the model is built.

Example:
    set_policy("bfloat16")   # layers compute in bfloat16, variables stay float32
"""

from __future__ import annotations

import keras

POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def set_policy(mixed_precision: str) -> str:
    """Sets the global Keras dtype policy for `none|bfloat16|float16`; returns the policy name."""
    policy = POLICIES[mixed_precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy
