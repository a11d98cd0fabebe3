"""`demo.time_budget_s`: the demo's pretraining sized to the machine it runs on.

After the TFRecord builders (the probe runs TensorFlow ops, which must come after the builders'
forks), the demo resolves the pretraining step as the job will (autotune.resolve: its cached XLA
probe, whose result the training jobs then reuse) and, from the measured seconds per step and
per compile, predicts the rest of the demo: pretraining, the fine-tuning and scratch runs (their
step budgets are fixed: the short fine-tuning budget is where the pretrained backbone pays off),
one trace/compile per training phase, and a reserve for evaluations, export, predict and the
report. Pretraining gets what is left, in half epochs, at most the configured `train.epochs`,
at least `MIN_EPOCHS`. The decision goes to WORK/sizing.json, which the report states.

Example:
    sizing = size_pretraining(cfg, paths, elapsed_s=42.0)   # rewrites configs/pretrain.yaml
    sizing["epochs"], sizing["predicted_total_s"]
"""

from __future__ import annotations

import math

from absl import logging

from transfer_tf import models
from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.config import ExperimentConfig, load_config, save_config
from transfer_tf.demo import plan
from transfer_tf.demo.pretraining import SSL_STEP_FACTOR

# Seconds for everything after the training jobs: three evaluations (each traces an eval step),
# export, predict, report and plots (~25 s on 2 cores, BENCHMARKS.md), plus interpreter start-up
# before the demo's clock starts.
RESERVE_S = 35.0
# Per training job beyond its compiles: building the model, restoring, checkpoint saves (the
# reduced demo's jobs, 2026-12-01, under load: 7 s each, 28 s for the two-phase fine-tune).
JOB_OVERHEAD_S = 8.0
# A head-only step runs the whole forward pass but back-propagates through the head alone.
HEAD_STEP_FRACTION = 0.5
# Below this the pretrained backbone no longer clearly beats scratch: the demo says it is over
# budget rather than pretrain less.
MIN_EPOCHS = 2.0


def fit_epochs(
    *,
    budget_s: float,
    elapsed_s: float,
    step_s: float,
    compile_s: float,
    steps_per_epoch: int,
    configured_epochs: float,
    head_steps: int,
    full_steps: int,
    scratch_steps: int,
    compiles: int = 4,
    jobs: int = 3,
) -> tuple[float, float]:
    """(pretraining epochs, predicted total demo seconds with them).

    `compiles`: train-step traces still to come (pretrain, two fine-tuning phases, scratch);
    `jobs`: training jobs still to come (pretrain, fine-tune, scratch).
    """
    after = (
        RESERVE_S
        + jobs * JOB_OVERHEAD_S
        + compiles * compile_s
        + (HEAD_STEP_FRACTION * head_steps + full_steps + scratch_steps) * step_s
    )
    room_steps = (budget_s - elapsed_s - after) / step_s
    half_epochs = math.floor(2 * room_steps / steps_per_epoch) / 2
    epochs = max(MIN_EPOCHS, min(configured_epochs, half_epochs))
    steps = round(epochs * steps_per_epoch)
    return epochs, elapsed_s + after + steps * step_s


def _measure(cfg: ExperimentConfig) -> tuple[dict, float, float]:
    """(decision dict, seconds per step, seconds per build + trace/compile) of `cfg`'s step."""
    from transfer_tf.training import autotune
    from transfer_tf.training.run_setup import plan_steps
    from transfer_tf.training.strategy import make_strategy

    strategy = make_strategy(cfg.train.strategy, cfg.train.tpu)
    # The pretraining job's own question (same total steps): its answer is then a cache hit.
    resolved, decision = autotune.resolve(cfg, strategy, total_steps=plan_steps(cfg)[1])
    probe = decision.probe or {}
    chosen = autotune.Candidate(resolved.train.mixed_precision, bool(resolved.train.xla))
    step = decision.step_seconds
    setup = (probe.get("setup_seconds") or {}).get(chosen.name)
    if step is None or setup is None:
        # Explicit settings (no probe): time that one configuration, uncached.
        measured = autotune.probe(
            [chosen], autotune.real_step_factory(resolved, strategy), release=models.release_models
        )
        step = measured["step_seconds"][chosen.name]
        setup = measured["setup_seconds"].get(chosen.name)
        if step is None or setup is None:
            raise RuntimeError(f"could not time a {chosen.name} training step")
    return decision.to_dict(), step, setup


def size_pretraining(cfg: ExperimentConfig, paths: plan.DemoPaths, elapsed_s: float) -> dict:
    """Rewrites the pretraining stage config's `train.epochs` to fit `demo.time_budget_s`
    (`elapsed_s`: demo seconds so far); writes and returns the sizing record."""
    import time

    t0 = time.monotonic()
    pretrain = load_config(paths.config("pretrain"))
    finetune = plan.finetune_config(cfg, paths)
    decision, step_s, compile_s = _measure(pretrain)
    # The probe times a supervised step; an SSL step does more work (two views, heads, target).
    step_s *= SSL_STEP_FACTOR[pretrain.ssl.method]
    elapsed_s += time.monotonic() - t0
    phases = finetune.transfer.phases
    head = sum(plan.phase_steps(finetune, p) for p in phases if p.trainable == "head")
    full = sum(plan.phase_steps(finetune, p) for p in phases if p.trainable != "head")
    per_epoch = max(1, pretrain.data.num_train_examples // pretrain.train.global_batch_size)
    configured = (
        pretrain.train.train_steps / per_epoch
        if pretrain.train.train_steps > 0
        else pretrain.train.epochs
    )
    epochs, predicted = fit_epochs(
        budget_s=cfg.demo.time_budget_s,
        elapsed_s=elapsed_s,
        step_s=step_s,
        compile_s=compile_s,
        steps_per_epoch=per_epoch,
        configured_epochs=configured,
        head_steps=head,
        full_steps=full,
        scratch_steps=head + full,
        compiles=2 + len(phases),
    )
    if pretrain.train.train_steps > 0:  # a step count, when the config gives one, wins
        pretrain.train.train_steps = round(epochs * per_epoch)
    pretrain.train.epochs = epochs
    save_config(pretrain, paths.config("pretrain"))
    record = {
        "budget_s": cfg.demo.time_budget_s,
        "elapsed_s": round(elapsed_s, 1),
        "step_seconds": round(step_s, 4),
        "compile_seconds": round(compile_s, 1),
        "configured_epochs": round(configured, 2),
        "epochs": epochs,
        "pretrain_steps": round(epochs * per_epoch),
        "predicted_total_s": round(predicted, 1),
        "over_budget": predicted > cfg.demo.time_budget_s,
        "runtime": decision,
    }
    write_json_atomic(paths.sizing, record)
    logging.info(
        "time budget %.0f s: %.0f ms/step (%s), %.0f s per compile -> pretraining %g of %g epochs, "
        "predicted demo total %.0f s",
        cfg.demo.time_budget_s,
        1000 * step_s,
        decision["xla_reason"],
        compile_s,
        epochs,
        configured,
        predicted,
    )
    return record


def describe_runtime(runtime: dict) -> list[str]:
    """One report line for a run's precision/XLA decision (its runtime.json)."""
    dtype = runtime.get("mixed_precision", "?")
    return [
        f"- Precision {'float32' if dtype == 'none' else dtype}, XLA "
        f"{'on' if runtime.get('xla') else 'off'} on `{runtime.get('hardware', '?')}`: "
        f"{runtime.get('precision_reason', '?')}; XLA: {runtime.get('xla_reason', '?')}."
    ]


def describe(record: dict | None) -> list[str]:
    """The report's lines for a sizing record (empty without one)."""
    if not record:
        return []
    lines = describe_runtime(record.get("runtime") or {}) + [
        f"- Time budget `demo.time_budget_s` = {record['budget_s']:.0f} s: measured "
        f"{1000 * record['step_seconds']:.0f} ms per training step and "
        f"{record['compile_seconds']:.0f} s per model build + trace/compile; pretraining sized to "
        f"{record['epochs']:g} of the configured {record['configured_epochs']:g} epochs "
        f"({record['pretrain_steps']} steps); predicted total {record['predicted_total_s']:.0f} s.",
    ]
    if record.get("over_budget"):
        lines.append(
            f"- Over budget even at the minimum of {MIN_EPOCHS:g} pretraining epochs: this "
            "machine is slower than the demo was sized for."
        )
    return lines
