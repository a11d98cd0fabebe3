"""SIGINT (Ctrl-C) and SIGTERM (a cloud scheduler's preemption notice) end a training job with a
checkpoint at the step it reached: one path for both.

While a `StopSignals` block is active:
- the first SIGINT or SIGTERM is noted at once (a line on stderr says so); the training loop
  finishes the step it is in, saves a checkpoint at that step and raises `RunInterrupted`, which
  the binaries turn into "where the checkpoint is / the command that resumes" and the
  conventional exit status 128 + signal (130 for SIGINT, 143 for SIGTERM);
- a second signal exits at once with that status, without saving (the abort callbacks, e.g. the
  run lock's release, still run).

Signals are received by a watcher thread through `signal.set_wakeup_fd`: Python runs signal
handlers only between bytecodes of the main thread, which may be inside a TensorFlow call for a
whole `steps_per_execution` block, so a handler alone could not make the second Ctrl-C immediate.
A SIGINT that was ignored when the block started (a background job of a non-interactive shell,
`nohup`) stays ignored. Outside the main thread (nothing to install) the block is inactive.

Example:
    with StopSignals(on_abort=[lock.release]) as stop:
        ...                                  # the loop polls signals.requested() between steps
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence

from absl import logging

HANDLED = (signal.SIGINT, signal.SIGTERM)

_active: StopSignals | None = None


def exit_code(signum: int) -> int:
    """The shell's status for a process ended by `signum` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


def requested() -> int | None:
    """The signal that asked the active block to stop (None: no request, or no active block)."""
    return _active.signum if _active is not None else None


class RunInterrupted(Exception):
    """A run stopped on a signal after saving a checkpoint.

    Attributes:
      signum: the signal; `exit_code` is 128 + signum.
      step: the global step the run reached (None when it stopped outside the training loop).
      checkpoint: the checkpoint that holds that step (None when the run has none yet).
    """

    def __init__(self, signum: int, step: int | None, checkpoint: str | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = exit_code(signum)
        where = f" at global step {step}" if step is not None else ""
        saved = f"checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written yet"
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}; {saved}")


class StopSignals:
    """The context manager described in the module doc. `signum`: the first signal received.

    Args:
      on_abort: callables run (errors ignored) before a second signal's immediate exit.
      exit_fn: how the second signal exits (`os._exit`; tests pass a recorder).
    """

    def __init__(
        self,
        on_abort: Sequence[Callable[[], object]] = (),
        exit_fn: Callable[[int], object] = os._exit,
    ):
        self.signum: int | None = None
        self._on_abort = list(on_abort)
        self._exit_fn = exit_fn
        self._installed: dict[int, object] = {}
        self._old_wakeup_fd = -1
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return bool(self._installed)

    def __enter__(self) -> StopSignals:
        global _active
        if _active is not None or threading.current_thread() is not threading.main_thread():
            return self  # nested job (the outer block handles signals), or not installable
        # Ignored stays ignored; None is a handler installed outside Python, left alone.
        handled = [s for s in HANDLED if signal.getsignal(s) not in (signal.SIG_IGN, None)]
        if not handled:
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd requires it
        self._pipe = (read_fd, write_fd)
        self._old_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        # The Python-level handler only keeps the C handler installed (which writes the wakeup
        # byte); the watcher thread acts on the byte as soon as it arrives.
        self._installed = {s: signal.signal(s, _noop_handler) for s in handled}
        self._thread = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._thread.start()
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        if not self._installed:
            return
        for signum, previous in self._installed.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        self._installed = {}
        _active = None
        read_fd, write_fd = self._pipe
        os.close(write_fd)  # the watcher's read returns b"" and it ends
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(read_fd)

    def _watch(self) -> None:
        read_fd = self._pipe[0]
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self._installed:
                    self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            logging.warning(
                "received %s: finishing the current step, then saving a checkpoint "
                "(send it again to exit at once without saving)",
                name,
            )
            return
        code = exit_code(signum)
        # Straight to the file descriptor: the main thread may hold the logging locks.
        with contextlib.suppress(OSError):
            os.write(2, f"second {name}: exiting at once without saving (status {code})\n".encode())
        for callback in self._on_abort:
            with contextlib.suppress(Exception):
                callback()
        self._exit_fn(code)


def _noop_handler(signum, frame) -> None:  # noqa: ARG001  (signal handler signature)
    """Installed so the C-level handler writes the wakeup byte; StopSignals._watch acts on it."""
