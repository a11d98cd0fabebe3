"""`train.mixed_precision: auto` and `train.xla: auto` resolved for the machine a run is on.

Precision `auto` follows the hardware rule (precision.choose). XLA `auto` is measured: a probe runs
a few steps of the real train step (this model, global batch and image size, on synthetic tensors,
no input pipeline) for each candidate of XLA on/off x the precisions the hardware allows (only
the configured precision when it is explicit) and keeps the fastest. The answer is cached in
`$XDG_CACHE_HOME/transfer_tf/xla_probe.json` (default `~/.cache/...`), keyed by hardware
fingerprint + model + image size + batch + candidates, so a machine pays the probe once. For a
run of known length the probe pays for itself (probe_budget): it times the default, then only the
candidates that could win back their cost within the run. An explicit `train.xla` skips the probe
(with `mixed_precision: auto` the rule then decides); a candidate that fails is logged and skipped.

Why measured: on a 2-core AVX2 EPYC, XLA made the ResNet-50 step 3.4x faster at 32 px but 0.62x
at 64 px (BENCHMARKS.md): no static setting is right everywhere.

Example:
    cfg, decision = resolve(cfg, strategy)   # cfg.train.mixed_precision / .xla now concrete
    decision.to_dict()                       # what was chosen, why, and the probe's timings
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from transfer_tf import models
from transfer_tf.config import ExperimentConfig
from transfer_tf.training import hardware, precision, probe_budget

CACHE_FILE = "xla_probe.json"
cache_dir = probe_budget.cache_dir
# Untimed calls (trace + XLA compile, then one to settle allocations) and timed steps per
# candidate: the median of 3 separates XLA on/off (differences of 1.5-3.4x) at a cost of ~6 steps.
PROBE_WARMUP = 2
PROBE_STEPS = 3


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One configuration the probe times: a precision (`none|bfloat16|float16`) and XLA on/off."""

    precision: str
    xla: bool

    @property
    def name(self) -> str:
        dtype = "float32" if self.precision == "none" else self.precision
        return f"{dtype}+xla" if self.xla else dtype


# Candidate -> a callable running ONE training step to completion (blocking). Tests inject a
# cheap one; the default builds the real model and step (real_step_factory).
StepFactory = Callable[[Candidate], Callable[[], None]]


@dataclasses.dataclass
class Decision:
    """What `resolve` chose and why (written to model_dir/runtime.json by the training jobs)."""

    mixed_precision: str
    xla: bool
    precision_reason: str
    xla_reason: str
    hardware: str
    # Probe results: {"cached": bool, "seconds": cost of the probe when it ran, "key": cache key,
    # "step_seconds": {candidate name: median s/step, None when it failed}, "setup_seconds": {name:
    # build + trace/compile s}, "candidate_seconds": {name: s it cost}}; None without probe.
    probe: dict | None = None

    @property
    def step_seconds(self) -> float | None:
        """The chosen candidate's measured seconds per step (None without a probe)."""
        if not self.probe:
            return None
        return self.probe["step_seconds"].get(Candidate(self.mixed_precision, self.xla).name)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "step_seconds": self.step_seconds}


def cache_key(hw: hardware.Hardware, cfg: ExperimentConfig, candidates: list[Candidate]) -> str:
    """What a probe result is valid for: machine, model (name + a digest of every model.* key,
    so variants and BN options count), image size, batch, candidates."""
    import hashlib

    from transfer_tf.config import to_dict

    model_digest = hashlib.sha256(
        json.dumps(to_dict(cfg.model), sort_keys=True).encode()
    ).hexdigest()[:8]
    return "|".join(
        [
            hw.fingerprint(),
            f"{cfg.model.name}:{model_digest}",
            f"{cfg.data.image_size}px",
            f"batch{cfg.train.global_batch_size}",
            ",".join(c.name for c in candidates),
        ]
    )


def probe(
    candidates: list[Candidate],
    make_step: StepFactory,
    *,
    warmup: int = PROBE_WARMUP,
    steps: int = PROBE_STEPS,
    release: Callable[[], None] | None = None,
    best_so_far: float | None = None,
) -> dict[str, dict]:
    """Times each candidate. Returns {"step_seconds": {name: median s/step, None if it failed},
    "setup_seconds": {name: build + trace/compile s, i.e. first call minus one step},
    "candidate_seconds": {name: s the candidate cost the probe}}.

    A candidate whose step is already over twice the best one's is not timed further (its exact
    figure does not matter; `best_so_far`: a step time measured before this call). `release()`
    runs after each candidate (the real factory's: clear the Keras session).
    """
    out: dict[str, dict] = {"step_seconds": {}, "setup_seconds": {}, "candidate_seconds": {}}
    for c in candidates:
        t0 = time.perf_counter()
        done = [v for v in [best_so_far, *out["step_seconds"].values()] if v is not None]
        best = min(done, default=None)
        try:
            step = make_step(c)
            step()  # trace (and XLA compile) + one step
            first = time.perf_counter() - t0
            times: list[float] = []
            for _ in range(warmup - 1 + steps):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
                if best is not None and times[-1] > 2 * best:
                    break
            seconds = float(np.median(times[warmup - 1 :] or times))
            out["step_seconds"][c.name] = seconds
            out["setup_seconds"][c.name] = round(max(0.0, first - seconds), 2)
            logging.info(
                "xla probe: %-14s %8.1f ms/step (%.1f s build and trace/compile)",
                c.name,
                1000 * seconds,
                first - seconds,
            )
        except Exception as e:  # noqa: BLE001  (any failure only removes this candidate)
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            logging.warning("xla probe: candidate %s failed, skipped: %s", c.name, first_line[:300])
            out["step_seconds"][c.name] = None
        finally:
            step = None
            if release is not None:
                release()
            out["candidate_seconds"][c.name] = round(time.perf_counter() - t0, 2)
    return out


def real_step_factory(cfg: ExperimentConfig, strategy: tf.distribute.Strategy) -> StepFactory:
    """Candidate -> one step of the real Trainer step (model, optimizer, L2, LR assign) for `cfg`
    on a fixed synthetic batch (uint8 images [B,S,S,3], one-hot float32 labels [B,C])."""
    from transfer_tf.models.resnet import build_classifier
    from transfer_tf.training import losses, optimizers, schedules
    from transfer_tf.training.loop import Trainer
    from transfer_tf.training.objectives import Supervised

    batch, size, classes = cfg.train.global_batch_size, cfg.data.image_size, cfg.data.num_classes
    per_replica = batch // strategy.num_replicas_in_sync
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, [per_replica, size, size, 3]).astype("uint8")
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, per_replica)]
    # The Trainer's model_dir: never written (the probe saves nothing), so never created.
    work = os.path.join(tempfile.gettempdir(), f"transfer_tf_xla_probe_{os.getpid()}")

    def make(c: Candidate) -> Callable[[], None]:
        precision.set_policy(c.precision)
        train_cfg = dataclasses.replace(cfg.train, mixed_precision=c.precision, xla=c.xla)
        with strategy.scope():
            model = build_classifier(cfg.model, classes)
            optimizer = optimizers.make_optimizer(train_cfg)
        trainer = Trainer(
            model,
            optimizer,
            strategy,
            work,
            global_batch_size=batch,
            weight_decay=optimizers.loss_weight_decay(train_cfg.optimizer, train_cfg.weight_decay),
            jit_compile=c.xla,
            checkpoint_every_steps=10**9,
            log_every_steps=10**9,
        )
        train_steps = trainer.compiled_steps(
            Supervised(model, losses.for_task(cfg.data.task, cfg.train.label_smoothing), batch),
            schedules.warmup_constant(1e-3),
            list(model.trainable_variables),
        )
        data = strategy.distribute_datasets_from_function(
            lambda ctx: tf.data.Dataset.from_tensors((images, labels)).repeat()
        )
        iterator = iter(data)
        one = tf.constant(1, tf.int32)

        def step() -> None:
            loss, _, _ = train_steps(iterator, one)
            float(loss)  # blocks until the step has run

        return step

    return make


def probe_candidates(hw: hardware.Hardware, precisions: list[str]) -> list[Candidate]:
    """XLA off/on for each precision, except bfloat16 + XLA on a CPU: XLA's CPU backend has no
    native bfloat16 convolutions (ResNet-50 on an avx512_bf16 EPYC: 0.48x bfloat16 without XLA at
    32 px, 0.21x at 64 px, BENCHMARKS.md), and its compile would cost the probe ~1 minute."""
    out = []
    for p in precisions:
        for xla in (False, True):
            if xla and p == "bfloat16" and hw.kind == "cpu":
                logging.info("xla probe: bfloat16+xla not probed on a CPU (emulated bfloat16)")
                continue
            out.append(Candidate(p, xla))
    return out


def _precisions(hw: hardware.Hardware, configured: str, chosen: str) -> list[str]:
    """Precisions to probe: those the hardware allows under `auto`, else the configured one."""
    return precision.candidates(hw) if configured == "auto" else [chosen]


def _rule_only(
    cfg: ExperimentConfig, strategy: tf.distribute.Strategy | None, hw: hardware.Hardware
) -> str | None:
    """Why the probe cannot run here (None when it can)."""
    if cfg.transfer.task != "classification":
        # The probe builds and times a classifier step; a detector's step is another program.
        return f"{cfg.transfer.task}: the probe times classifier steps; XLA off (set train.xla)"
    if hw.kind == "tpu":
        return "TPU: the step is compiled for the TPU anyway; no probe"
    if cfg.deterministic:
        # TF refuses the XLA train step under op determinism (no deterministic MaxPoolGrad).
        return "deterministic: XLA has no deterministic MaxPool gradient; XLA off"
    resolver = getattr(strategy.extended, "_cluster_resolver", None) if strategy else None
    if resolver is not None and resolver.cluster_spec().as_dict():
        return "multi-worker: every worker must run the same step; no probe (set train.xla)"
    return None


def resolve(
    cfg: ExperimentConfig,
    strategy: tf.distribute.Strategy | None = None,
    *,
    make_step: StepFactory | None = None,
    hw: hardware.Hardware | None = None,
    total_steps: int | None = None,
    compiles: int = 1,
) -> tuple[ExperimentConfig, Decision]:
    """Returns (cfg with concrete `train.mixed_precision` and `train.xla`, the Decision).

    `total_steps`: the steps the run will train; when given, the choice minimises build +
    compile + total_steps x step time (a short fine-tune may not win an XLA compile back),
    otherwise the step time alone. `compiles`: how many times the run traces its train step
    (one per fine-tuning phase), each paying XLA's compile again.

    Call after the strategy exists and before the run's model is built (the probe builds and
    discards its own models and leaves the Keras session cleared). Logs the choice and why.
    """
    train = cfg.train
    hw = hw or hardware.detect(strategy)
    rule, why = precision.choose(hw)
    if train.mixed_precision == "auto":
        chosen_precision, precision_reason = rule, f"auto: {why}"
    else:
        chosen_precision, precision_reason = train.mixed_precision, "set in the config"
    probe_info = None
    no_probe = _rule_only(cfg, strategy, hw)
    candidates = []
    if train.xla == "auto" and not no_probe:
        candidates = probe_candidates(hw, _precisions(hw, train.mixed_precision, chosen_precision))
    if train.xla != "auto":
        xla, xla_reason = bool(train.xla), "set in the config (no probe)"
    elif no_probe:
        xla, xla_reason = False, no_probe
    elif len(candidates) == 1:
        xla, xla_reason = candidates[0].xla, f"{candidates[0].name} is the only candidate; no probe"
    else:
        key = cache_key(hw, cfg, candidates)
        path = os.path.join(probe_budget.cache_dir(), CACHE_FILE)
        doc = probe_budget.read_cache(path)
        entry = doc.get(key)
        if not (isinstance(entry, dict) and isinstance(entry.get("step_seconds"), dict)):
            entry = None
        release = None if make_step else models.release_models

        def factory(c: Candidate) -> Callable[[], None]:  # the real one only when a probe runs
            nonlocal make_step
            make_step = make_step or real_step_factory(cfg, strategy)
            return make_step(c)

        t0 = time.perf_counter()
        if total_steps and (entry is None or entry.get("skipped")):
            # A run of known length: time the default, then only what can pay for itself
            # (probe_budget); a cached entry's measurements are reused, never retimed.
            mine = [v for k, v in doc.items() if k.startswith(hw.fingerprint() + "|")]
            measured, timed = probe_budget.staged_probe(
                candidates,
                lambda todo, best: probe(todo, factory, release=release, best_so_far=best),
                entry,
                total_steps=total_steps,
                compiles=compiles,
                xla_factor=probe_budget.xla_setup_factor([e for e in mine if isinstance(e, dict)]),
            )
        elif entry is None:
            measured, timed = probe(candidates, factory, release=release), True
        else:
            measured, timed = entry, False
        if timed:
            probe_info = {
                **measured,
                "seconds": round(time.perf_counter() - t0, 2),
                "cached": False,
                "key": key,
            }
            if any(v is not None for v in measured["step_seconds"].values()):
                keep = {k: v for k, v in probe_info.items() if k not in ("cached", "key")}
                probe_budget.write_cache(path, key, keep)
        else:
            probe_info = {**entry, **measured, "cached": True, "key": key}
            logging.info("xla probe: cached result from %s (%s)", path, key)
        timings = probe_info["step_seconds"]
        ok = [c for c in candidates if timings.get(c.name) is not None]
        shown = ", ".join(
            f"{c.name} {1000 * timings[c.name]:.0f} ms" if c in ok else f"{c.name} failed"
            for c in candidates
            if c.name in timings
        )
        if ok:
            setup = probe_info.get("setup_seconds") or {}
            # Every candidate builds and traces the model; XLA's extra is the compile on top of
            # the plain trace. (Setup differences between plain candidates are mostly which one
            # ran first in the process, not a property of the candidate.)
            plain = [setup[c.name] for c in ok if not c.xla and c.name in setup]
            baseline = min(plain, default=0.0)

            def predicted(c: Candidate) -> float:
                # With the run's length known, compile time counts: XLA must win it back.
                extra = compiles * max(0.0, setup.get(c.name, 0.0) - baseline) if c.xla else 0.0
                return timings[c.name] * (total_steps or 1) + (extra if total_steps else 0.0)

            best = min(ok, key=predicted)
            xla = best.xla
            chosen_precision = best.precision
            cost = "cached" if probe_info["cached"] else f"{probe_info['seconds']:.1f} s"
            xla_reason = f"probe ({cost}): {shown} per step; fastest {best.name}"
            if total_steps:
                xla_reason += (
                    f" for {total_steps} steps including XLA compile "
                    f"(predicted {predicted(best):.0f} s)"
                )
            if train.mixed_precision == "auto" and best.precision != rule:
                precision_reason = (
                    f"auto: probe measured {best.name} fastest (hardware rule: {rule}, {why})"
                )
        else:
            xla, xla_reason = False, f"probe: every candidate failed ({shown}); XLA off"
        skipped = probe_info.get("skipped") or {}
        if skipped:
            xla_reason += "; not probed: " + "; ".join(f"{n} ({w})" for n, w in skipped.items())
    resolved = dataclasses.replace(
        cfg, train=dataclasses.replace(train, mixed_precision=chosen_precision, xla=xla)
    )
    decision = Decision(
        chosen_precision, xla, precision_reason, xla_reason, hw.fingerprint(), probe_info
    )
    logging.info("hardware: %s", hw.describe())
    logging.info("mixed precision: %s (%s)", chosen_precision, precision_reason)
    logging.info("xla: %s (%s)", str(xla).lower(), xla_reason)
    return resolved, decision
