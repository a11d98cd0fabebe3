"""FLOP counting and the CPU peak behind benchmark_training's `fraction_of_peak`."""

from __future__ import annotations

import pytest

from transfer_tf.benchmarks import flops


@pytest.fixture(scope="module")
def resnet50():
    from transfer_tf.config import ModelConfig
    from transfer_tf.models.resnet import build_classifier
    from transfer_tf.training import precision

    precision.set_policy("none")
    return build_classifier(ModelConfig(name="resnet50"), 1000)


@pytest.fixture(scope="module")
def forward_64(resnet50):
    return flops.step_flops(resnet50, 64, training=False)


def test_resnet50_forward_is_about_4_giga_multiply_adds_and_scales_with_area(resnet50, forward_64):
    at_224 = flops.step_flops(resnet50, 224, training=False)
    # Published: 3.8-3.9 G multiply-adds (ResNet v1, stride in the block's first 1x1: the paper,
    # keras.applications) to 4.1 G (v1.5, stride in the 3x3). 1 multiply-add = 2 FLOPs.
    assert 3.7e9 <= at_224 / 2 <= 4.3e9, at_224
    # 64 and 224 px both divide by the stride 32, so every feature map grows by the area ratio
    # (224/64)^2 = 12.25; only the classifier's fixed 2048x1000 matmul (0.6 % at 64 px) does not.
    assert at_224 / forward_64 == pytest.approx(12.25, rel=0.01)


def test_a_training_step_is_about_three_forward_passes(resnet50, forward_64):
    # Backward = gradients w.r.t. inputs and w.r.t. weights, each about one forward pass.
    train = flops.step_flops(resnet50, 64, training=True)
    assert 2.8 <= train / forward_64 <= 3.2, (train, forward_64)
    # Per image: a batch of 2 counts twice the FLOPs of a batch of 1.
    at_2 = flops.step_flops(resnet50, 64, training=False, batch=2)
    assert at_2 == pytest.approx(forward_64, rel=1e-3)


def _cpuinfo(tmp_path, *, cpus, flags, mhz, vendor="AuthenticAMD", family=25, siblings=None):
    siblings = siblings or cpus
    block = (
        f"vendor_id\t: {vendor}\ncpu family\t: {family}\nmodel name\t: Test CPU\n"
        f"cpu MHz\t\t: {mhz}\nsiblings\t: {siblings}\ncpu cores\t: {cpus}\nflags\t\t: {flags}\n"
    )
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(f"processor\t: {i}\n{block}" for i in range(siblings)))
    return str(path)


def test_peak_from_cpuinfo(tmp_path):
    # The AVX2 EPYC: 2 cores x 2 FMA units x 8 floats x 2 x 3 GHz = 192 GFLOP/s.
    avx2 = _cpuinfo(tmp_path, cpus=2, flags="sse avx fma avx2", mhz="3000.000")
    peak = flops.cpu_peak(avx2, cpus=2)
    assert peak["peak_gflops"] == 192.0 and peak["fp32_flops_per_cycle_per_core"] == 32
    # Zen 4 (family 0x19) runs AVX-512 on 256-bit halves: the same 32 FLOPs per cycle.
    zen4 = _cpuinfo(tmp_path, cpus=2, flags="avx2 fma avx512f avx512_bf16", mhz="2596.140")
    assert flops.cpu_peak(zen4, cpus=2)["peak_gflops"] == pytest.approx(166.2, abs=0.1)
    # Intel with AVX-512: 512-bit FMAs, twice the FLOPs per cycle.
    xeon = _cpuinfo(
        tmp_path, cpus=4, flags="avx2 fma avx512f amx_bf16", mhz="2000", vendor="GenuineIntel"
    )
    assert flops.cpu_peak(xeon, cpus=4)["peak_gflops"] == 4 * 64 * 2.0
    # SMT: 4 CPUs that are 2 cores' hyperthreads share 2 cores' FMA units.
    smt = _cpuinfo(tmp_path, cpus=2, siblings=4, flags="avx2 fma", mhz="3000")
    assert flops.cpu_peak(smt, cpus=4)["cores"] == 2.0
    assert any("cpu MHz" in a for a in peak["assumptions"])


def test_fraction_of_peak():
    got = flops.fraction_of_peak(images_per_sec=21.0, flops_per_image=2e9, peak_gflops=192.0)
    assert got == {"achieved_gflops": 42.0, "fraction_of_peak": 0.219}
    # 0.05 CPU s per 2-GFLOP image = 40 GFLOP/s per busy core, of 96 per core.
    got = flops.fraction_of_peak(21.0, 2e9, 192.0, cpu_seconds_per_image=0.05, cores=2)
    assert got["fraction_of_peak_per_cpu_second"] == pytest.approx(40 / 96, abs=1e-3)
