"""tf.data service on loopback: the dispatcher and worker binaries serve a distributed dataset,
stop cleanly on SIGTERM, and refuse bad flags in one line."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from binary_harness import run_cases

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.data_service", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_listening(proc: subprocess.Popen, timeout_s: float = 120) -> str:
    """Returns the `grpc://HOST:PORT` the binary printed once it serves."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if " listening on " in line:
            return line.split(" listening on ")[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {proc.communicate()[1][-2000:]}")


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A dispatcher (fixed free port, journaled) and a worker (port 0) started together."""
    port = free_port()
    journal = tmp_path_factory.mktemp("journal")
    dispatcher = start("--role=dispatcher", f"--port={port}", f"--work_dir={journal}")
    worker = start("--role=worker", "--port=0", f"--dispatcher_address=grpc://127.0.0.1:{port}")
    try:
        assert wait_listening(dispatcher).endswith(f":{port}")
        worker_address = wait_listening(worker)
        yield {
            "dispatcher": f"grpc://127.0.0.1:{port}",
            "worker_address": worker_address,
            "procs": (worker, dispatcher),
            "journal": journal,
        }
    finally:
        for proc in (worker, dispatcher):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_distributed_epoch_reads_every_element_once(service):
    import tensorflow as tf

    ds = tf.data.Dataset.range(50).map(lambda x: x * 3)
    ds = ds.apply(
        tf.data.experimental.service.distribute(
            "distributed_epoch", service["dispatcher"], job_name="test_epoch"
        )
    )
    assert sorted(int(x) for x in ds) == [3 * i for i in range(50)]


def test_address_and_port_checks():
    from transfer_tf.distribute.data_service import check_port_free, parse_address
    from transfer_tf.errors import UsageError

    assert parse_address("grpc://10.0.0.5:5050", "--x") == ("10.0.0.5", 5050)
    assert parse_address("localhost:5050", "--x") == ("localhost", 5050)
    for bad in ("http://x:1", "grpc://x", "x", "grpc://x:1/path", "grpc://x:99999"):
        with pytest.raises(UsageError, match="--x: .* is not grpc://HOST:PORT"):
            parse_address(bad, "--x")
    with pytest.raises(UsageError, match="--port: 70000 is not a TCP port"):
        check_port_free(70000)
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        with pytest.raises(UsageError, match=f"--port: port {s.getsockname()[1]} is not available"):
            check_port_free(s.getsockname()[1])


def test_bad_flags_are_one_line_errors(service):
    port = int(service["dispatcher"].rsplit(":", 1)[1])
    cases = [
        (["--role=dispatcher", f"--port={port}"], f"--port: port {port} is not available"),
        (["--role=worker", "--port=0"], "--dispatcher_address is required"),
        (
            [
                "--role=worker",
                "--port=0",
                "--dispatcher_address=127.0.0.1:1",
                "--dispatcher_timeout_s=0.5",
            ],
            "dispatcher 127.0.0.1:1 is not reachable",
        ),
    ]
    # All three in one harness process (one TensorFlow import); the first is a fresh process.
    results = run_cases("pipelines.data_service:run", [args for args, _ in cases], timeout=180)
    for result, (_, needle) in zip(results, cases, strict=True):
        err = result.stderr
        assert result.returncode == 2, err
        # pipelines/__init__ silences TensorFlow's start-up lines: stderr holds our line only.
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def journal_bytes(journal) -> int:
    return sum(f.stat().st_size for f in journal.rglob("*") if f.is_file())


def test_pretrain_reads_through_the_service(service, tmp_path):
    # In process: the binary's flag handling is tested elsewhere; what matters here is that
    # training reads its batches from the service. Not deterministic: op determinism is
    # process-wide and would leak into the tests that share this pytest process.
    from test_multiworker import overrides, write_shards

    from transfer_tf.config import load_config
    from transfer_tf.training.pretrain import run_pretraining

    pattern = write_shards(tmp_path)
    before = journal_bytes(service["journal"])
    model_dir = tmp_path / "run"
    sets = [o.removeprefix("--set=") for o in overrides(pattern) if o != "--set=deterministic=true"]
    cfg = load_config(
        f"{REPO}/configs/demo.yaml",
        [
            *sets,
            "train.strategy=one_device",
            "train.train_steps=2",
            "train.mixed_precision=none",
            f"data.tf_data_service={service['dispatcher']}",
        ],
    )
    logs = run_pretraining(cfg, str(model_dir))
    assert np.isfinite(logs["loss"]), logs
    assert tf_latest(model_dir).endswith("ckpt-2")
    # The dispatcher journaled the trainer's dataset registration and job: the batches came
    # from the service, not from a local pipeline.
    assert journal_bytes(service["journal"]) > before


def tf_latest(model_dir) -> str:
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(model_dir / "checkpoints")) or ""


def test_sigterm_stops_worker_and_dispatcher_cleanly(service):
    for proc in service["procs"]:
        code, err = stop(proc)
        assert code == 0, err[-2000:]
        assert "stopped" in err and "Traceback" not in err
