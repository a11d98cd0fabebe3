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


def test_a_server_that_will_not_stop_is_given_up_on_after_the_grace():
    """CI saw a worker's stop() block over 30 s after SIGTERM; stopping must stay bounded."""
    import threading

    from transfer_tf.distribute.data_service import serve_until

    class Server:
        def __init__(self, blocks: bool):
            self.blocks, self.stopped = blocks, False

        def stop(self):
            if self.blocks:
                threading.Event().wait(3600)
            self.stopped = True

    stuck, fine = Server(blocks=True), Server(blocks=False)
    event = threading.Event()
    event.set()
    result = []
    caller = threading.Thread(
        target=lambda: result.append(serve_until(event, stuck, fine, grace_s=0.2)), daemon=True
    )
    caller.start()
    caller.join(10)
    assert not caller.is_alive(), "serve_until blocked on a server that does not stop"
    assert result == [[stuck]] and fine.stopped


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


def _through(service, data_cfg, run_id="", batch=2, deterministic=True):
    """Every batch of one epoch of `data_cfg`'s train split, read through the service."""
    import dataclasses

    from transfer_tf.data.input import build_dataset

    data_cfg = dataclasses.replace(data_cfg, tf_data_service=service["dispatcher"])
    ds = build_dataset(
        data_cfg,
        split="train",
        global_batch_size=batch,
        deterministic=deterministic,
        repeat=False,
        run_id=run_id,
    )
    return [(images.numpy(), labels.numpy()) for images, labels in ds]


def test_coco_parser_and_its_label_map_table_through_the_service(service, tmp_path):
    # The parser captures a label-map lookup table: the worker process rebuilds it from the
    # dataset graph and maps raw category ids (3, 90) to their indices (1, 3).
    from test_input_data import write_coco_shard

    from transfer_tf.config import DataConfig

    whole = [[0.0, 0.0, 1.0, 1.0]] * 2
    examples = [{"size": (40, 48), "boxes": whole, "ids": [3, 90]} for _ in range(4)]
    _, label_map = write_coco_shard(str(tmp_path), examples)
    cfg = DataConfig(
        train_pattern=f"{tmp_path}/coco-*",
        schema="coco",
        num_classes=4,
        label_map_file=label_map,
        image_size=16,
        shuffle_buffer=1,
    )
    batches = _through(service, cfg, run_id="coco")
    assert len(batches) == 2
    for images, labels in batches:
        assert images.dtype == np.uint8 and images.shape == (2, 16, 16, 3)
        np.testing.assert_array_equal(labels, [[0, 1, 0, 1]] * 2)


def test_policy_pipeline_through_the_service(service, tmp_path):
    import dataclasses

    from test_input_data import write_classification_shards

    from transfer_tf.config import DataConfig

    write_classification_shards(str(tmp_path), 2, 4, num_classes=3)
    plain = DataConfig(
        train_pattern=f"{tmp_path}/train-*",
        num_classes=3,
        image_size=16,
        shuffle_buffer=1,
        file_shuffle=False,
    )
    policy = dataclasses.replace(plain, augment_policy="randaugment", randaugment_magnitude=0.9)
    without = _through(service, plain, run_id="policy")
    with_policy = _through(service, policy, run_id="policy")
    assert len(with_policy) == len(without) == 4
    for (a, la), (b, lb) in zip(without, with_policy, strict=True):
        assert b.dtype == np.uint8 and b.shape == a.shape == (2, 16, 16, 3)
        # Same records, crops and labels (fixed order, position seeds); the policy moved pixels.
        np.testing.assert_array_equal(la, lb)
    assert any(
        not np.array_equal(a, b) for (a, _), (b, _) in zip(without, with_policy, strict=True)
    )


def test_two_trainers_share_one_service(service, tmp_path):
    import threading

    from test_input_data import write_classification_shards

    from transfer_tf.config import DataConfig
    from transfer_tf.data.input import build_dataset

    written = write_classification_shards(str(tmp_path), 2, 4, unique_labels=True, label_offset=0)
    cfg = DataConfig(
        train_pattern=f"{tmp_path}/train-*",
        num_classes=len(written),
        label_offset=0,
        image_size=16,
        shuffle_buffer=1,
        tf_data_service=service["dispatcher"],
    )
    every = sorted(label for _, _, label in written)

    def records(batches):
        return [int(i) for _, labels in batches for i in labels.argmax(axis=1)]

    # Two workers of one run: one job, each epoch's records split between them, none twice.
    seen: dict[int, list[int]] = {}

    def trainer(k):
        ds = build_dataset(cfg, split="train", global_batch_size=2, repeat=False, run_id="run-a")
        seen[k] = records([(x.numpy(), y.numpy()) for x, y in ds])

    threads = [threading.Thread(target=trainer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(seen[0] + seen[1]) == every, seen
    # Another run with the same data and seed on the same service reads every record itself.
    assert sorted(records(_through(service, cfg, run_id="run-b", deterministic=False))) == every
    # Another experiment (other classes and image size, same seed) gets its own batches.
    other = DataConfig(
        train_pattern=f"{tmp_path}/train-*",
        num_classes=len(written) + 2,
        label_offset=0,
        image_size=8,
        shuffle_buffer=1,
    )
    batches = _through(service, other, run_id="run-a", deterministic=False)
    assert [b[0].shape for b in batches] == [(2, 8, 8, 3)] * 4
    assert all(b[1].shape == (2, len(written) + 2) for b in batches)


def test_sigterm_stops_worker_and_dispatcher_cleanly(service):
    for proc in service["procs"]:
        code, err = stop(proc)
        assert code == 0, err[-2000:]
        assert "stopped" in err and "Traceback" not in err
