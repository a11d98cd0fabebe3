"""Preemption of a multi-worker run: every worker saves at the same step, then all exit 143.

One process (one GPU machine, a TPU VM, a TPU slice driven from one host) stops on SIGTERM through
`training.signals`. Under MultiWorkerMirroredStrategy that is not enough: the save is a collective
op, and the worker that got the SIGTERM cannot save alone. TensorFlow's
`tf.distribute.experimental.PreemptionCheckpointHandler` agrees on a step across the workers
through the coordination service, has every worker save there and then calls an exit function.
Here:
- `sigterm_notice()` (`run_guard`'s block on multi-worker runs) and `handler_for` turn SIGTERM
  into a flag; a second SIGTERM exits at once with status 143;
- `handler_for(strategy, ...)` builds the handler with that flag as its termination watcher (the
  platforms' notice is SIGTERM: Vertex AI, GKE, spot VMs), the Trainer's own `save` as its save
  function (checkpoints stay `ckpt-<global step>`) and an exit function that raises `Preempted`,
  which the Trainer turns into `signals.RunInterrupted` (the binaries exit 143: TensorFlow's own
  restartable code on GCP, and what Vertex AI and the JobSet in deploy/ retry).
TensorFlow supports the handler for MultiWorkerMirrored on CPU/GPU; on a GCP TPU or CPU VM it only
warns and does nothing, so there `handler_for` returns None and SIGTERM ends the worker.

Example:
    handler = handler_for(strategy, trainer.save)
    result = handler.run(train_step, iterator) if handler else train_step(iterator)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator

import tensorflow as tf
from absl import logging

_notice = threading.Event()


class Preempted(Exception):
    """Raised by the handler's exit function once every worker saved the agreed step."""


def sigterm_received() -> bool:
    """Whether this process got SIGTERM inside `sigterm_notice` (the handler's watcher)."""
    return _notice.is_set()


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001  (signal handler signature)
    if _notice.is_set():
        os.write(2, b"second SIGTERM: exiting at once without saving (status 143)\n")
        os._exit(128 + signal.SIGTERM)
    _notice.set()
    os.write(2, b"received SIGTERM: the workers agree on a step, save it, then exit\n")


@contextlib.contextmanager
def sigterm_notice() -> Iterator[None]:
    """The block of a multi-worker run: `handler_for` makes SIGTERM set the flag the handler
    watches; on the way out SIGTERM gets back the action it had before (main thread only)."""
    _notice.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        _notice.clear()


def _catch_sigterm() -> None:
    """SIGTERM -> the notice flag. Called once the strategy exists: the coordination service a
    MultiWorkerMirroredStrategy starts installs a C++ SIGTERM handler of its own, which would
    otherwise swallow the signal."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _raise_preempted() -> None:
    raise Preempted()


def handler_for(
    strategy: tf.distribute.Strategy, save_fn: Callable[[], object]
) -> tf.distribute.experimental.PreemptionCheckpointHandler | None:
    """The handler for a MultiWorkerMirrored run of several workers (module doc), else None.
    `save_fn` writes the run's checkpoint at the current step on this worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if sum(len(tasks) for tasks in spec.values()) <= 1:
        return None  # one process: training.signals stops it
    config = tf.distribute.experimental.TerminationConfig(
        termination_watcher_fn=sigterm_received,
        exit_fn=_raise_preempted,
        grace_period=0,
        save_fn=save_fn,
    )
    # The handler restores and extends the checkpoint it is given: an empty one in a scratch
    # folder keeps the run's checkpoints as they are (saves go through `save_fn`) and gives every
    # worker the same fresh run counter (restoring the run's checkpoint there made the workers'
    # collectives disagree on a resumed run).
    scratch = tempfile.mkdtemp(prefix="transfer_tf_preemption_")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    # A non-chief's handler writes to "workertemp_<i>" beside checkpoint_dir: inside scratch too.
    handler = tf.distribute.experimental.PreemptionCheckpointHandler(
        resolver,
        tf.train.Checkpoint(),
        checkpoint_dir=os.path.join(scratch, "checkpoints"),
        termination_config=config,
    )
    platform = getattr(getattr(handler, "_platform_device", None), "name", "")
    if platform in ("GCE_TPU", "GCE_CPU"):
        logging.warning(
            "no coordinated preemption save on %s (TensorFlow supports it on GPU): SIGTERM ends "
            "this worker; the run resumes from its latest periodic checkpoint",
            platform,
        )
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return None
    _catch_sigterm()
    logging.info("preemption: workers save together on SIGTERM (PreemptionCheckpointHandler)")
    return handler
