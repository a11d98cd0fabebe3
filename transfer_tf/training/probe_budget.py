"""Which probe candidates are worth timing for a run of known length (autotune's XLA probe).

The probe times the safe default first: the hardware rule's precision without XLA (the setting
`auto` falls back to). That one measurement is needed anyway (it predicts the run, and the demo
sizes its stages from it) and costs one build + trace and a few steps. Every other candidate costs
its own build + trace (plus XLA's compile) and a few steps, and is timed only when

  1. it could pay for itself: even at the largest speed-up any such candidate has shown on a CPU
     (`MAX_SPEEDUP`), the saving over the run, minus the extra compiles the run would pay, must
     exceed what probing it costs; and
  2. it fits the budget: its probe costs at most `PROBE_FRACTION` of the predicted run.

A short run (the demo's 144 steps) therefore trains on the safe default after one measurement; a
long one (a real pretraining) times every candidate, because a few traces are then a rounding
error and a 1.3-3x faster step is not. Estimates, not timings, decide: a candidate's probe cost
is predicted from the default's measured build + trace, times the XLA-compile factor this machine
has shown before (from the probe cache) or `DEFAULT_XLA_SETUP_FACTOR` when it has shown none.
Skipped candidates are recorded as such in the cache, so a later, longer run with the same model,
size and batch can still time them; measured ones are never timed again.

Example:
    plan = plan_candidates(rest, step_s=0.4, setup_s=20.0, total_steps=144, compiles=1)
    plan.probe      # [] : nothing worth its cost for 144 steps
    plan.skipped    # {"float32+xla": "probe ~42 s > 5% of the predicted 78 s run"}
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Sequence
from typing import Any, Protocol

from absl import logging

# The probe may spend at most this share of the predicted run on candidates beyond the default.
PROBE_FRACTION = 0.05
# Upper bounds on a candidate's step speed-up over the default, the largest seen on any CPU class
# (BENCHMARKS.md): XLA 3.4x (AVX2 EPYC, Eigen kernels, 32 px); bfloat16 vs float32 2.5x either way
# (avx512_bf16 EPYC under load; AMX Xeon 2.4x). Bounds, not expectations: they only rule out
# candidates that could not pay even in the best case seen.
MAX_SPEEDUP = {"xla": 3.5, "precision": 2.5}
# An XLA candidate's build + trace + compile over a plain build + trace, until this machine has
# measured its own (the AVX2 EPYC: ~80 s vs ~30 s for ResNet-50 at 32 px).
DEFAULT_XLA_SETUP_FACTOR = 2.5
# Untimed + timed calls a probed candidate runs (autotune.PROBE_WARMUP + PROBE_STEPS).
PROBE_CALLS = 5


def cache_dir() -> str:
    """`$XDG_CACHE_HOME/transfer_tf` (XDG default `~/.cache/transfer_tf`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "transfer_tf")


def read_cache(path: str) -> dict:
    """The probe cache file's {key: entry} ({} when missing or unreadable)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_cache(path: str, key: str, entry: dict) -> None:
    """Stores `entry` under `key`, keeping the other keys; a write failure only logs."""
    from transfer_tf.atomic_io import write_json_atomic

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        doc = read_cache(path)  # other entries (other models/sizes) stay
        doc[key] = entry
        write_json_atomic(path, doc)
    except OSError as e:  # a read-only home must not stop training: the probe reruns next time
        logging.warning("xla probe: could not write the cache %s (%s)", path, e)


class _Candidate(Protocol):
    name: str
    xla: bool


@dataclasses.dataclass(frozen=True)
class ProbePlan:
    """Candidates to time now, and {name: why not} for the others."""

    probe: list[Any]
    skipped: dict[str, str]


def xla_setup_factor(entries: Sequence[dict]) -> float:
    """XLA setup / plain setup as measured in earlier probe results of this machine (cache
    entries: {"setup_seconds": {name: s}}), median over entries; the default when none has both."""
    ratios = []
    for entry in entries:
        setup = entry.get("setup_seconds") or {}
        plain = [v for k, v in setup.items() if not k.endswith("+xla") and v]
        xla = [v for k, v in setup.items() if k.endswith("+xla") and v]
        if plain and xla:
            ratios.append(min(xla) / min(plain))
    return max(1.0, statistics.median(ratios)) if ratios else DEFAULT_XLA_SETUP_FACTOR


def plan_candidates(
    rest: Sequence[_Candidate],
    *,
    step_s: float,
    setup_s: float,
    total_steps: int,
    compiles: int = 1,
    xla_factor: float = DEFAULT_XLA_SETUP_FACTOR,
    fraction: float = PROBE_FRACTION,
) -> ProbePlan:
    """Splits `rest` (the candidates after the default) into those worth timing and the others.

    `step_s`/`setup_s`: the default's measured seconds per step and per build + trace;
    `total_steps`, `compiles`: the run's steps and step traces (each XLA one compiles again).
    """
    run_s = total_steps * step_s + compiles * setup_s
    probe, skipped = [], {}
    for c in rest:
        setup = setup_s * (xla_factor if c.xla else 1.0)
        cost = setup + PROBE_CALLS * step_s
        best = MAX_SPEEDUP["xla" if c.xla else "precision"]
        extra_compiles = compiles * (setup - setup_s) if c.xla else 0.0
        saving = total_steps * step_s * (1 - 1 / best) - extra_compiles
        if saving <= cost:
            skipped[c.name] = (
                f"cannot pay for itself: probe ~{cost:.0f} s, best-case saving "
                f"{max(0.0, saving):.0f} s over {total_steps} steps"
            )
        elif cost > fraction * run_s:
            skipped[c.name] = (
                f"probe ~{cost:.0f} s > {fraction:.0%} of the predicted {run_s:.0f} s run"
            )
        else:
            probe.append(c)
    return ProbePlan(probe, skipped)


def staged_probe(
    candidates: Sequence[_Candidate],
    measure: Any,
    cached: dict | None,
    *,
    total_steps: int,
    compiles: int,
    xla_factor: float,
) -> tuple[dict, bool]:
    """Times the default (`candidates[0]`) unless `cached` has it, then whichever of the others
    `plan_candidates` finds worth it and `cached` lacks. `measure(list, best step s so far or
    None) -> autotune.probe's dict`.

    Returns (the merged result, with "skipped": {name: why} for this run; whether anything was
    timed now). A default that failed leaves nothing to predict from: the others are all timed.
    """
    merged: dict = {
        k: dict((cached or {}).get(k) or {})
        for k in ("step_seconds", "setup_seconds", "candidate_seconds")
    }
    timed = False

    def run(todo: Sequence[_Candidate]) -> None:
        nonlocal timed
        known = [v for v in merged["step_seconds"].values() if v is not None]
        result = measure(list(todo), min(known, default=None))
        for k in merged:
            merged[k].update(result.get(k) or {})
        timed = True

    default, rest = candidates[0], list(candidates[1:])
    if default.name not in merged["step_seconds"]:
        run([default])
    todo = [c for c in rest if c.name not in merged["step_seconds"]]
    step_s = merged["step_seconds"].get(default.name)
    setup_s = merged["setup_seconds"].get(default.name)
    if step_s is None or setup_s is None:
        plan = ProbePlan(todo, {})
    else:
        plan = plan_candidates(
            todo,
            step_s=step_s,
            setup_s=setup_s,
            total_steps=total_steps,
            compiles=compiles,
            xla_factor=xla_factor,
        )
    if plan.probe:
        run(plan.probe)
    merged["skipped"] = plan.skipped
    return merged, timed
