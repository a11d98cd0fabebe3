"""train.mixed_precision/xla `auto`: the hardware rule, the measured XLA probe and its cache.

The probe's step function is injected (sleeps of known length), so no model trains here."""

import dataclasses
import json
import logging
import os
import time

import pytest

from transfer_tf.config import ConfigError, load_config
from transfer_tf.training import autotune, hardware, precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

AVX2 = hardware.Hardware("cpu", cpu_class="avx2-only", cpu_model="Test EPYC", cores=2)
BF16_CPU = hardware.Hardware("cpu", cpu_class="avx512_bf16", cpu_model="Test EPYC", cores=2)


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


class FakeSteps:
    """A step factory whose steps sleep: XLA candidates `xla_ms`, others `plain_ms`."""

    def __init__(self, plain_ms=1.0, xla_ms=15.0, fail_xla=False):
        self.plain_ms, self.xla_ms, self.fail_xla = plain_ms, xla_ms, fail_xla
        self.built = []

    def __call__(self, candidate):
        self.built.append(candidate.name)
        if candidate.xla and self.fail_xla:
            raise RuntimeError("XLA compilation is not available on this platform")
        ms = self.xla_ms if candidate.xla else self.plain_ms
        if candidate.precision == "bfloat16":
            ms /= 2
        return lambda: time.sleep(ms / 1000)


def _cfg(*overrides):
    return load_config(None, ["model.name=resnet18", "data.image_size=32", *overrides])


def test_precision_rule_per_hardware():
    gpu = lambda cc: hardware.Hardware(  # noqa: E731
        "gpu", "avx2-only", "x", 8, gpu_name="G", gpu_compute_capability=cc
    )
    assert precision.choose(hardware.Hardware("tpu", "avx2-only", "x", 8))[0] == "bfloat16"
    assert precision.choose(gpu((9, 0)))[0] == "bfloat16"
    assert precision.choose(gpu((7, 0)))[0] == "float16"
    assert precision.choose(gpu((6, 1)))[0] == "none"
    assert precision.choose(BF16_CPU) == ("bfloat16", "CPU has avx512_bf16: native bfloat16 matmul")
    assert precision.choose(AVX2)[0] == "none"
    assert precision.candidates(AVX2) == ["none"]
    assert precision.candidates(BF16_CPU) == ["bfloat16", "none"]


def test_cpu_class_from_cpuinfo_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 fma\n")
    flags = hardware.cpu_flags(str(info))
    assert hardware.cpu_class(flags) == "avx512_bf16"
    assert hardware.cpu_class(flags | {"amx_bf16"}) == "amx_bf16"
    assert hardware.cpu_class({"avx2", "fma"}) == "avx2-only"


def test_probe_picks_the_fastest_and_a_cache_hit_skips_it(cache_home, caplog):
    caplog.set_level(logging.INFO)
    steps = FakeSteps(plain_ms=30.0, xla_ms=1.0)
    cfg, decision = autotune.resolve(
        _cfg("train.xla=auto", "train.mixed_precision=auto"), make_step=steps, hw=BF16_CPU
    )
    # bfloat16+xla is not a CPU candidate (XLA's CPU backend emulates bfloat16 convolutions).
    assert steps.built == ["bfloat16", "float32", "float32+xla"]
    # The measured fastest wins over the hardware rule's bfloat16.
    assert (cfg.train.mixed_precision, cfg.train.xla) == ("none", True)
    # The fastest step's time is recorded (1 ms asleep; below the 30 ms ones even on a loaded host).
    assert decision.probe["cached"] is False and decision.step_seconds < 0.03
    assert "fastest float32+xla" in caplog.text and "mixed precision: none" in caplog.text
    assert "auto: probe measured float32+xla fastest" in decision.precision_reason
    doc = json.loads((cache_home / "transfer_tf" / autotune.CACHE_FILE).read_text())
    assert list(doc) == [decision.probe["key"]] and "|32px|batch1024|" in decision.probe["key"]

    again = FakeSteps()
    cfg2, decision2 = autotune.resolve(
        _cfg("train.xla=auto", "train.mixed_precision=auto"), make_step=again, hw=BF16_CPU
    )
    assert again.built == []  # cache hit: nothing built or timed
    assert decision2.probe["cached"] is True
    assert (cfg2.train.mixed_precision, cfg2.train.xla) == ("none", True)
    # Another model option is another key (a different step), and so is another image size.
    assert autotune.cache_key(BF16_CPU, _cfg("model.dropout=0.5"), []) != autotune.cache_key(
        BF16_CPU, _cfg(), []
    )
    autotune.resolve(_cfg("train.xla=auto", "data.image_size=64"), make_step=again, hw=BF16_CPU)
    assert sorted(again.built) == ["float32", "float32+xla"]  # explicit precision: XLA only


def test_explicit_settings_skip_the_probe(cache_home):
    steps = FakeSteps()
    cfg, decision = autotune.resolve(
        _cfg("train.xla=false", "train.mixed_precision=auto"), make_step=steps, hw=BF16_CPU
    )
    assert steps.built == [] and decision.probe is None
    assert (cfg.train.mixed_precision, cfg.train.xla) == ("bfloat16", False)
    assert decision.precision_reason.startswith("auto: CPU has avx512_bf16")
    cfg, _ = autotune.resolve(
        _cfg("train.xla=true", "train.mixed_precision=none"), make_step=steps, hw=AVX2
    )
    assert steps.built == [] and (cfg.train.mixed_precision, cfg.train.xla) == ("none", True)
    # Explicit bfloat16 on a CPU leaves one candidate (no bfloat16+xla on CPUs): nothing to probe.
    cfg, decision = autotune.resolve(
        _cfg("train.xla=auto", "train.mixed_precision=bfloat16"), make_step=steps, hw=BF16_CPU
    )
    assert steps.built == [] and cfg.train.xla is False and "only candidate" in decision.xla_reason
    assert not (cache_home / "transfer_tf").exists()


def test_failing_candidate_is_skipped_with_a_log_line(cache_home, caplog):
    caplog.set_level(logging.INFO)
    cfg, decision = autotune.resolve(
        _cfg("train.xla=auto", "train.mixed_precision=auto"),
        make_step=FakeSteps(plain_ms=10.0, xla_ms=1.0, fail_xla=True),
        hw=AVX2,
    )
    assert (cfg.train.mixed_precision, cfg.train.xla) == ("none", False)
    assert decision.probe["step_seconds"]["float32+xla"] is None
    assert "candidate float32+xla failed, skipped: XLA compilation is not available" in caplog.text

    # Every candidate failing still trains (XLA off), and caches nothing.
    def broken(candidate):
        raise RuntimeError("no device")

    cfg, decision = autotune.resolve(
        _cfg("train.xla=auto", "data.image_size=48"), make_step=broken, hw=AVX2
    )
    assert cfg.train.xla is False and "every candidate failed" in decision.xla_reason
    doc = json.loads((cache_home / "transfer_tf" / autotune.CACHE_FILE).read_text())
    assert len(doc) == 1


def test_run_dir_records_the_resolved_choice_and_why(tmp_path, monkeypatch):
    import keras

    from transfer_tf.training import run_setup
    from transfer_tf.training.strategy import make_strategy

    monkeypatch.setattr(hardware, "detect", lambda strategy=None: AVX2)
    strategy = make_strategy("one_device")
    cfg, decision = run_setup.setup_runtime(
        _cfg("train.xla=false", "train.mixed_precision=auto"), strategy
    )
    assert keras.mixed_precision.global_policy().name == "float32"
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        optimizer = keras.optimizers.SGD(0.1)
    run = tmp_path / "run"
    run_setup.start_run(
        cfg, str(run), strategy, model, optimizer, weight_decay=0.0, runtime=decision
    )
    saved = load_config(str(run / "config.yaml"))
    assert (saved.train.mixed_precision, saved.train.xla) == ("none", False)
    why = json.loads((run / run_setup.RUNTIME_FILE).read_text())
    assert why["precision_reason"].startswith("auto: CPU has neither amx_bf16 nor avx512_bf16")
    assert (
        why["xla_reason"].startswith("set in the config") and why["hardware"] == AVX2.fingerprint()
    )
    # Reopened on other hardware (a resume, or a finished run a benchmark reuses): the file keeps
    # what the run started on and adds the new segment; the same hardware again adds nothing.
    # (It used to be overwritten by whatever process opened the run last.)
    moved = dataclasses.replace(decision, hardware="cpu:x1:avx512_bf16:other")
    for again in (moved, moved):
        run_setup.start_run(
            cfg, str(run), strategy, model, optimizer, weight_decay=0.0, runtime=again
        )
    why = json.loads((run / run_setup.RUNTIME_FILE).read_text())
    assert why["hardware"] == AVX2.fingerprint()
    assert [r["hardware"] for r in why["resumes"]] == ["cpu:x1:avx512_bf16:other"]


def test_short_runs_weigh_compile_time_and_slow_candidates_stop_early():
    class SlowCompile(FakeSteps):
        def __call__(self, candidate):
            step = super().__call__(candidate)
            calls = []

            def run():
                if candidate.xla and not calls:
                    time.sleep(0.3)  # the XLA compile, paid on the first call only
                calls.append(1)
                step()

            self.calls[candidate.name] = calls
            return run

    steps = SlowCompile(plain_ms=20.0, xla_ms=5.0)
    steps.calls = {}
    cfg = _cfg("train.xla=auto", "train.mixed_precision=none")
    long_run, decision = autotune.resolve(cfg, make_step=steps, hw=AVX2, total_steps=1000)
    assert long_run.train.xla is True  # 15 ms x 1000 steps repays 0.3 s of compile
    assert decision.probe["setup_seconds"]["float32+xla"] >= 0.25
    short_run, decision = autotune.resolve(cfg, make_step=steps, hw=AVX2, total_steps=5)
    assert decision.probe["cached"] and short_run.train.xla is False  # 5 steps do not
    assert "for 5 steps including XLA compile" in decision.xla_reason
    # 60 steps repay one compile (0.9 s saved > 0.3 s), not six (one per fine-tuning phase).
    assert autotune.resolve(cfg, make_step=steps, hw=AVX2, total_steps=60)[0].train.xla is True
    six = autotune.resolve(cfg, make_step=steps, hw=AVX2, total_steps=60, compiles=6)[0]
    assert six.train.xla is False
    assert len(steps.calls["float32+xla"]) == 1 + autotune.PROBE_WARMUP - 1 + autotune.PROBE_STEPS
    # A candidate over twice the best step so far is not timed further: first call + one step.
    slow_xla = SlowCompile(plain_ms=2.0, xla_ms=60.0)
    slow_xla.calls = {}
    autotune.resolve(_cfg("train.xla=auto", "data.image_size=40"), make_step=slow_xla, hw=AVX2)
    assert len(slow_xla.calls["float32+xla"]) == 2


def test_cpu_class_override_for_benchmarks(monkeypatch):
    monkeypatch.setenv(hardware.CPU_CLASS_ENV, "avx2-only")
    hw = hardware.detect()
    assert hw.kind == "cpu" and hw.cpu_class == "avx2-only" and "avx2-only" in hw.fingerprint()
    monkeypatch.setenv(hardware.CPU_CLASS_ENV, "avx3")
    with pytest.raises(hardware.UsageError, match="TRANSFER_TF_CPU_CLASS='avx3': expected one"):
        hardware.detect()


def test_benchmark_training_variant_names():
    from pipelines.benchmark_training import parse_variant

    assert parse_variant("loop_bf16_xla") == ("loop", "bfloat16", True)
    assert parse_variant("fit_fp32") == ("fit", "none", False)
    with pytest.raises(Exception, match="--variants: unknown 'loop_fp16'"):
        parse_variant("loop_fp16")


def test_plain_candidates_are_not_charged_for_running_first():
    class FirstIsSlowToStart(FakeSteps):
        def __call__(self, candidate):
            step = super().__call__(candidate)
            state = {"first": len(self.built) == 1}

            def run():
                if state.pop("first", False):
                    time.sleep(0.3)  # process-level warm-up paid by whichever candidate is first
                step()

            return run

    cfg, decision = autotune.resolve(
        _cfg("train.xla=auto", "train.mixed_precision=auto"),
        make_step=FirstIsSlowToStart(plain_ms=40.0, xla_ms=160.0),
        hw=BF16_CPU,
        total_steps=5,
    )
    assert decision.probe["setup_seconds"]["bfloat16"] >= 0.25  # measured first
    assert (cfg.train.mixed_precision, cfg.train.xla) == ("bfloat16", False)


def test_a_detection_run_keeps_auto_but_is_not_probed_with_a_classifier(cache_home):
    """The probe times classifier steps: a detector's `xla: auto` resolves to off without one (the
    shipped RetinaNet config says auto like every config), and says why."""
    steps = FakeSteps(plain_ms=30.0, xla_ms=1.0)
    cfg, decision = autotune.resolve(
        load_config(os.path.join(REPO, "configs", "coco_retinanet_resnet50.yaml")),
        make_step=steps,
        hw=BF16_CPU,
    )
    assert steps.built == []
    assert cfg.train.xla is False and cfg.train.mixed_precision == "bfloat16"
    assert decision.xla_reason.startswith("detection: the probe times classifier steps")


def test_deterministic_runs_train_without_xla(cache_home):
    """TF has no deterministic XLA MaxPool gradient: `deterministic: true` with `xla: true` used to
    die at the first step with an UnimplementedError traceback; it is a config error naming both
    keys, and `xla: auto` resolves to off there without a probe (the probe's XLA winner would
    fail the same way)."""
    with pytest.raises(ConfigError, match=r"'deterministic' \(true\) and 'train.xla' \(true\)"):
        _cfg("deterministic=true", "train.xla=true")
    steps = FakeSteps(plain_ms=30.0, xla_ms=1.0)
    cfg, decision = autotune.resolve(
        _cfg("deterministic=true", "train.xla=auto", "train.mixed_precision=auto"),
        make_step=steps,
        hw=AVX2,
    )
    assert steps.built == [] and cfg.train.xla is False
    assert decision.xla_reason.startswith("deterministic:")
    # Not deterministic: the same machine and timings pick XLA.
    cfg, _ = autotune.resolve(
        _cfg("train.xla=auto", "train.mixed_precision=auto"), make_step=steps, hw=AVX2
    )
    assert cfg.train.xla is True
