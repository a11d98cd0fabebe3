"""TPU path without a TPU: `--strategy=tpu` from pretrain.py and finetune.py ends in one line
`error: ...` (exit 2), through each stage the machine allows: the config check (bfloat16; the
batch is checked against the strategy's replica count, not a per-host constant), a gRPC address
that does not answer, no TPU at all, and the TPU cluster resolver itself (a TPU name it cannot
resolve). The cases of one binary share one harness process (tests/binary_harness.py); the
resolver case runs last in its process."""

import os
import socket

import pytest
from binary_harness import start_cases

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_strategy_tpu_without_a_tpu_is_a_one_line_error(tmp_path):
    demo = f"--config={REPO}/configs/demo.yaml"
    # The data config is checked before any strategy is made: an empty shard (no manifest, as
    # the public tools write) passes it, so each case reaches its TPU check.
    (tmp_path / "train-00000-of-00001").write_bytes(b"")
    data = "--set=data.train_pattern=" + str(tmp_path / "train-*")
    examples = "--set=data.num_train_examples=64"  # finetune checks its phase plan first
    # demo.yaml's train.epochs is the pretraining length: fine-tuning with phases rejects it.
    phases_only = "--set=train.epochs=0"
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "TF_CONFIG")}
    cases = [
        # demo.yaml is auto (bfloat16 on a TPU); float16 is refused before any connection.
        (
            "pipelines.pretrain",
            ["--strategy=tpu", "--mixed_precision=float16"],
            "train.mixed_precision': TPU training runs in bfloat16",
        ),
        (
            "pipelines.pretrain",
            ["--strategy=tpu", f"--tpu=grpc://127.0.0.1:{closed_port()}"],
            "--strategy=tpu: no TPU answers at 'grpc://127.0.0.1:",
        ),
        # No name, no TPU_NAME and no local TPU device: refused before the resolver.
        (
            "pipelines.finetune",
            ["--set=train.strategy=tpu", phases_only],
            "--strategy=tpu: no TPU on this machine",
        ),
        # Batch 12 is no config error (a v5e-4 slice has 4 cores): the strategy's replica
        # count decides, once a TPU answers; here there is none.
        (
            "pipelines.finetune",
            ["--set=train.strategy=tpu", "--set=train.global_batch_size=12", phases_only],
            "--strategy=tpu: no TPU on this machine",
        ),
        # A TPU name: the cluster resolver tries to look it up and fails.
        (
            "pipelines.finetune",
            ["--set=train.strategy=tpu", "--set=train.tpu=no-such-tpu", phases_only],
            "--strategy=tpu: no TPU 'no-such-tpu' could be reached",
        ),
    ]
    # One harness process per binary (one TensorFlow import each), both running at once.
    modules = ("pipelines.pretrain", "pipelines.finetune")
    common = [demo, data, examples]
    started = [
        start_cases(
            f"{module}:run",
            [
                [*common, f"--model_dir={tmp_path / str(i)}", *args]
                for i, (m, args, _) in enumerate(cases)
                if m == module
            ],
            env=env,
            cwd=REPO,
        )
        for module in modules
    ]
    by_module = {m: iter(s.results(timeout=300)) for m, s in zip(modules, started, strict=True)}
    for module, _, needle in cases:
        result = next(by_module[module])
        err = result.stderr
        assert result.returncode == 2, (module, err[-3000:])
        assert "Traceback" not in err, err[-3000:]
        # TensorFlow's C++ runtime prints its own start-up lines; ours is exactly one line.
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and needle in errors[0], (module, err[-3000:])
        assert not os.path.exists(tmp_path / "0" / "checkpoints")
