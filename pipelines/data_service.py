"""Run a tf.data service dispatcher or worker until SIGTERM/SIGINT.

    python -m pipelines.data_service --role=dispatcher --port=5050 [--work_dir=gs://b/dispatcher]
    python -m pipelines.data_service --role=worker --port=5051 \
        --dispatcher_address=grpc://DISPATCHER_HOST:5050 --worker_address=THIS_HOST

Trainers then use `--set=data.tf_data_service=grpc://DISPATCHER_HOST:5050`. Once serving, the
binary prints one line `<role> listening on grpc://HOST:PORT` on stdout (with `--port=0` that is
how the chosen port is learned). SIGTERM or SIGINT exits 0: a dispatcher is stopped (abandoned
with a warning if still stopping after `--stop_grace_s`); a worker exits without stopping its
server, whose stop() can hold the interpreter for minutes while a client task is open.
"""

import os
import signal
import socket
import sys
import threading

from absl import flags, logging

from transfer_tf import cli

FLAGS = flags.FlagValues()
flags.DEFINE_enum(
    "role",
    None,
    ["dispatcher", "worker"],
    "Which tf.data service server to run.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("port", None, "TCP port to listen on (0 = any free port).", flag_values=FLAGS)
flags.DEFINE_string(
    "dispatcher_address",
    None,
    "Worker: the dispatcher, grpc://HOST:PORT (or HOST:PORT).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "worker_address",
    "",
    "Worker: HOST[:PORT] trainers use to reach this worker (default localhost, fine on one host).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "work_dir",
    "",
    "Dispatcher: journal directory; enables fault-tolerant restarts.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "dispatcher_timeout_s",
    60.0,
    "Worker: how long to wait for the dispatcher to be reachable.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "stop_grace_s",
    10.0,
    "After SIGTERM: how long to let the server stop before exiting anyway.",
    flag_values=FLAGS,
)


def run_from_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
    """Serves as the parsed flags say (`argv`: absl's, the program name first) until SIGTERM or
    SIGINT; prints `<role> listening on grpc://HOST:PORT` on stdout once serving."""
    cli.reject_extra_args(argv)
    cli.require_flags("role", "port", flag_values=flag_values)
    if flag_values.role == "worker":
        cli.require_flags("dispatcher_address", flag_values=flag_values)
    elif flag_values.dispatcher_address:
        raise cli.UsageError("--dispatcher_address is for --role=worker only")
    if flag_values.role == "worker" and flag_values.work_dir:
        raise cli.UsageError("--work_dir is for --role=dispatcher only")
    from transfer_tf.distribute import data_service

    # Handlers first: a SIGTERM during startup must still end in a clean stop.
    stop_event = threading.Event()

    def on_signal(signum, _frame):
        logging.info("received %s: stopping", signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if flag_values.role == "dispatcher":
        server = data_service.start_dispatcher(flag_values.port, flag_values.work_dir)
        host = socket.gethostname()
    else:
        server = data_service.start_worker(
            flag_values.port,
            flag_values.dispatcher_address,
            flag_values.worker_address,
            flag_values.dispatcher_timeout_s,
        )
        host = flag_values.worker_address.split(":")[0] or "localhost"
    address = f"grpc://{host}:{data_service.bound_port(server)}"
    logging.info("%s started at %s", flag_values.role, address)
    print(f"{flag_values.role} listening on {address}", flush=True)
    if flag_values.role == "worker":
        # A worker is not stopped: TF's WorkerServer.stop() can block for minutes while a client's
        # task is open, holding the GIL (CI: no Python thread ran again, a grace thread included).
        # It holds no state worth a clean stop; its dispatcher reassigns its tasks, as after a crash.
        data_service.serve_until(stop_event)
        _exit_now(f"{flag_values.role} stopped (without server.stop(): see the code)")
    if data_service.serve_until(stop_event, server, grace_s=flag_values.stop_grace_s):
        logging.warning(
            "%s did not stop within --stop_grace_s=%g s (a client task still open); exiting anyway",
            flag_values.role,
            flag_values.stop_grace_s,
        )
        _exit_now(f"{flag_values.role} stopped (forced)")
    logging.info("%s stopped", flag_values.role)


def _exit_now(message: str) -> None:
    """Logs `message` and exits 0 at once: the server's C++ threads would block interpreter
    shutdown the same way its stop() does."""
    logging.info("%s", message)
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str]) -> None:
    run_from_flags(FLAGS, argv)


def run() -> None:
    cli.run(main, FLAGS)


if __name__ == "__main__":
    run()
