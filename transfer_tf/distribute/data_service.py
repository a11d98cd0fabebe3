"""tf.data service servers: TensorFlow's own dispatcher and workers, started with checked arguments.

The training side needs nothing from here: `data.tf_data_service=grpc://HOST:PORT` makes
`transfer_tf.data.input.build_dataset` send its train dataset through
`tf.data.experimental.service.distribute`. This module starts the servers that URL points at
(`pipelines/data_service.py` is the binary) and turns TensorFlow's failure modes into one-line
errors: a port in use makes gRPC log and raise a bare RuntimeError, and a worker whose dispatcher is
unreachable blocks forever retrying its registration.

Example (one dispatcher, one worker, a client, all in one process):
    dispatcher = start_dispatcher(port=0)
    worker = start_worker(port=0, dispatcher_address=dispatcher.target)
    ds = tf.data.Dataset.range(10).apply(
        tf.data.experimental.service.distribute("distributed_epoch", dispatcher.target))
    stop(worker, dispatcher)
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from transfer_tf.errors import UsageError

if TYPE_CHECKING:
    import tensorflow as tf

PROTOCOL = "grpc"


def parse_address(address: str, flag: str) -> tuple[str, int]:
    """`grpc://HOST:PORT` or `HOST:PORT` -> (host, port); UsageError naming `flag` otherwise."""
    text = address if "://" in address else f"{PROTOCOL}://{address}"
    parsed = urlparse(text)
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if parsed.scheme != PROTOCOL or not host or not port or parsed.path not in ("", "/"):
        raise UsageError(f"{flag}: {address!r} is not grpc://HOST:PORT (e.g. grpc://10.0.0.5:5050)")
    return host, port


def check_port_free(port: int, flag: str = "--port") -> None:
    """UsageError if `port` cannot be bound on all interfaces (the servers bind 0.0.0.0)."""
    if not 0 <= port < 65536:
        raise UsageError(f"{flag}: {port} is not a TCP port (expected 0..65535; 0 = any free port)")
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as e:
            raise UsageError(f"{flag}: port {port} is not available ({e.strerror})") from None


def wait_for_listener(host: str, port: int, timeout_s: float, what: str) -> None:
    """Polls a TCP connect to host:port until it succeeds; UsageError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UsageError(
                    f"{what} {host}:{port} is not reachable after {timeout_s:g}s ({e.strerror or e})"
                ) from None
        time.sleep(0.5)


def start_dispatcher(port: int, work_dir: str = "") -> tf.data.experimental.service.DispatchServer:
    """Starts a dispatcher on `port` (0 = any free port; its `target` says which).

    Args:
      port: TCP port on all interfaces.
      work_dir: journal directory (any TF filesystem path); when set the dispatcher runs in
        fault-tolerant mode and a restarted dispatcher resumes its jobs from the journal.
    """
    check_port_free(port)
    # TensorFlow is imported only after the cheap checks: bad flags fail fast and without its
    # C++ start-up log lines.
    import tensorflow as tf

    config = tf.data.experimental.service.DispatcherConfig(
        port=port, protocol=PROTOCOL, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir)
    )
    try:
        return tf.data.experimental.service.DispatchServer(config)
    except (RuntimeError, tf.errors.OpError) as e:
        raise UsageError(f"--port: cannot start the dispatcher on port {port} ({e})") from None


def start_worker(
    port: int,
    dispatcher_address: str,
    worker_address: str = "",
    connect_timeout_s: float = 60.0,
) -> tf.data.experimental.service.WorkerServer:
    """Starts a worker registered with the dispatcher at `dispatcher_address`.

    Args:
      port: TCP port on all interfaces (0 = any free port).
      dispatcher_address: `grpc://HOST:PORT` or `HOST:PORT`.
      worker_address: the `HOST[:PORT]` clients use to reach this worker (`%port%` is replaced by
        the bound port). Default `localhost:%port%` only works when trainers run on this host;
        give the host's network name on a cluster.
      connect_timeout_s: how long to wait for the dispatcher to accept connections.
    """
    host, dport = parse_address(dispatcher_address, "--dispatcher_address")
    check_port_free(port)
    # TF's worker blocks forever retrying registration against a dead dispatcher: probe first.
    wait_for_listener(host, dport, connect_timeout_s, "--dispatcher_address: dispatcher")
    if worker_address and ":" not in worker_address:
        worker_address = f"{worker_address}:%port%"
    import tensorflow as tf

    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=f"{host}:{dport}",
        worker_address=worker_address or None,
        port=port,
        protocol=PROTOCOL,
    )
    try:
        return tf.data.experimental.service.WorkerServer(config)
    except (RuntimeError, tf.errors.OpError) as e:
        raise UsageError(f"--port: cannot start the worker on port {port} ({e})") from None


def bound_port(server) -> int:
    """The port a started dispatcher or worker listens on (useful after `port=0`)."""
    target = getattr(server, "target", None)  # DispatchServer only
    if target:
        return parse_address(target, "dispatcher")[1]
    return parse_address(server._address, "worker")[1]  # no public accessor for workers


def serve_until(
    event: threading.Event, *servers, poll_s: float = 0.5, grace_s: float = 10.0
) -> list:
    """Blocks until `event` is set (by a signal handler), then stops `servers` in order.

    Polling instead of `server.join()`: join blocks inside C++ where Python signal handlers never
    run, so SIGTERM could not stop the process cleanly. Returns the servers that did not stop
    within `grace_s` (see `stop`).
    """
    while not event.wait(poll_s):
        pass
    return stop(*servers, grace_s=grace_s)


def stop(*servers, grace_s: float = 10.0) -> list:
    """Stops servers (workers before their dispatcher, so they do not log reconnect errors).

    A worker's `stop()` can block for minutes while a client's task is still open on it (seen in
    CI: over 30 s after SIGTERM), longer than an orchestrator's kill grace. Each stop therefore gets
    `grace_s` seconds in a daemon thread; servers still stopping after that are returned, and the
    caller decides (the binary exits anyway: a worker holds no state worth waiting for, and the
    dispatcher's journal is written synchronously).
    """
    stuck = []
    for server in servers:
        thread = threading.Thread(target=server.stop, daemon=True)
        thread.start()
        thread.join(grace_s)
        if thread.is_alive():
            stuck.append(server)
    return stuck
