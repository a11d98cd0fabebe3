"""The XLA probe pays for itself: which candidates a run of known length times, and the cache.

Nothing is timed here: the probe's measurements are canned (autotune.probe is replaced), so the
decisions follow from the numbers below, whatever the machine's load."""

from __future__ import annotations

import json

import pytest

from transfer_tf.config import load_config
from transfer_tf.training import autotune, hardware, probe_budget

AVX2 = hardware.Hardware("cpu", cpu_class="avx2-only", cpu_model="Test EPYC", cores=2)
BF16_CPU = hardware.Hardware("cpu", cpu_class="avx512_bf16", cpu_model="Test EPYC", cores=2)
# Canned probe results, seconds: ResNet-50 at 32 px on a 2-core EPYC, roughly.
STEP = {"float32": 0.4, "float32+xla": 0.3, "bfloat16": 0.45}
SETUP = {"float32": 20.0, "float32+xla": 50.0, "bfloat16": 22.0}


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def timed(monkeypatch):
    """Replaces the probe: records which candidates each call would time, returns canned data."""

    class Calls(list):
        bests: list = []  # the best step time each call was told of (its early-stop bar)

    calls = Calls()

    def fake_probe(candidates, make_step, **kwargs):
        names = [c.name for c in candidates]
        calls.append(names)
        calls.bests.append(kwargs.get("best_so_far"))
        return {
            "step_seconds": {n: STEP[n] for n in names},
            "setup_seconds": {n: SETUP[n] for n in names},
            "candidate_seconds": {n: SETUP[n] + 5 * STEP[n] for n in names},
        }

    monkeypatch.setattr(autotune, "probe", fake_probe)
    return calls


def _cfg(*overrides):
    return load_config(None, ["model.name=resnet50", "data.image_size=32", *overrides])


def _never_built(candidate):
    raise AssertionError(f"the real step of {candidate.name} was built")


def test_short_run_skips_a_long_run_probes_and_the_cache_is_reused(timed, cache_home):
    cfg = _cfg("train.xla=auto", "train.mixed_precision=none")
    # The demo's pretraining, 144 steps of 0.4 s: even 3.5x faster, XLA would save 41 s minus
    # its extra 30 s compile, less than its ~52 s probe.
    short, decision = autotune.resolve(cfg, make_step=_never_built, hw=AVX2, total_steps=144)
    assert timed == [["float32"]]  # the safe default only
    assert short.train.xla is False and decision.step_seconds == 0.4
    assert decision.xla_reason.endswith(
        "not probed: float32+xla (cannot pay for itself: probe ~52 s, best-case saving 11 s "
        "over 144 steps)"
    )
    # The same run again: all from the cache, nothing timed.
    again, decision = autotune.resolve(cfg, make_step=_never_built, hw=AVX2, total_steps=144)
    assert timed == [["float32"]] and decision.probe["cached"] and again.train.xla is False
    # A long pretraining with the same model, size and batch: only the skipped candidate is
    # timed (the default's figures are reused), and XLA's 25% faster step wins.
    long, decision = autotune.resolve(cfg, make_step=_never_built, hw=AVX2, total_steps=200_000)
    assert timed == [["float32"], ["float32+xla"]] and long.train.xla is True
    assert timed.bests == [None, 0.4]  # XLA's timing stops early if over twice the default's
    doc = json.loads((cache_home / "transfer_tf" / autotune.CACHE_FILE).read_text())
    (entry,) = doc.values()
    assert set(entry["step_seconds"]) == {"float32", "float32+xla"} and entry["skipped"] == {}
    # Complete now: even a short run reads it, and chooses by its own length (no XLA for 144).
    short, decision = autotune.resolve(cfg, make_step=_never_built, hw=AVX2, total_steps=144)
    assert len(timed) == 2 and decision.probe["cached"] and short.train.xla is False


def test_a_precision_candidate_is_timed_only_when_it_can_pay(timed):
    cfg = _cfg("train.xla=auto", "train.mixed_precision=auto")
    resolved, decision = autotune.resolve(cfg, make_step=_never_built, hw=BF16_CPU, total_steps=20)
    # 20 steps of 0.45 s: even a 2.5x faster float32 saves 5 s, less than its ~24 s probe.
    assert timed == [["bfloat16"]]
    assert resolved.train.mixed_precision == "bfloat16" and resolved.train.xla is False
    assert "float32 (cannot pay for itself: probe ~24 s, best-case saving 5 s over 20 steps)" in (
        decision.xla_reason
    )


def test_plan_candidates_decision_logic():
    rest = [autotune.Candidate("none", False), autotune.Candidate("none", True)]
    args = {"step_s": 0.4, "setup_s": 20.0, "xla_factor": 2.5}
    assert probe_budget.plan_candidates(rest, total_steps=144, **args).probe == []
    assert probe_budget.plan_candidates(rest, total_steps=100_000, **args).probe == rest
    # Six compiles (one per fine-tuning phase), each paying XLA's extra 30 s: over 1,000 steps
    # of 0.4 s XLA could save up to 286 - 180 = 106 s, more than its 52 s probe, but that probe
    # is over 5% of the predicted 520 s run; over 300 steps it could not pay at all.
    plan = probe_budget.plan_candidates(rest[1:], total_steps=1000, compiles=6, **args)
    assert plan.probe == [] and "5% of the predicted 520 s run" in plan.skipped["float32+xla"]
    plan = probe_budget.plan_candidates(rest[1:], total_steps=300, compiles=6, **args)
    assert "cannot pay for itself" in plan.skipped["float32+xla"]


def test_the_xla_compile_factor_is_learned_from_this_machines_cache():
    assert probe_budget.xla_setup_factor([]) == probe_budget.DEFAULT_XLA_SETUP_FACTOR
    entries = [
        {"setup_seconds": {"float32": 10.0, "float32+xla": 40.0}},
        {"setup_seconds": {"bfloat16": 8.0, "float32": 9.0, "float32+xla": 16.0}},
        {"setup_seconds": {"float32": 10.0}},  # no XLA figure: not evidence
    ]
    assert probe_budget.xla_setup_factor(entries) == pytest.approx((4.0 + 2.0) / 2)
