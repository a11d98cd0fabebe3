"""One writer per run directory: `MODEL_DIR/run.lock`.

Two training jobs on one `--model_dir` would overwrite each other's checkpoints without a word, so
a training job takes this lock before it writes anything there, and a second writer stops at once
with one line naming the holder. The lock file is JSON naming the holder (`host`, `pid`,
`started`, the `command`, a random `token`) and its last `heartbeat` (Unix seconds), which a
daemon thread refreshes every `heartbeat_seconds` while the run lives.

A stale lock is taken over with a warning: its process is gone (same host), or its heartbeat is
older than `stale_seconds` (another host, a hung or killed machine). A held lock is never broken;
the message says how to take it over by hand (delete the file) when its run is known to be dead.
Read-only jobs (evaluate, export, inspect_tfrecords) never take it. Under MultiWorkerMirrored only
the chief takes it: the other workers write to their own temporary folders
(`strategy.worker_dir`).

Local folders: the lock is created atomically (written under a temporary name, then `os.link`,
which fails when the lock exists), replaced atomically on each heartbeat. Object stores (gs://)
have no create-if-absent through tf.io.gfile: there the lock is best effort (it is written, then
read back to see which of two simultaneous starters won), and the rule is one writer per run
directory; the lock catches the common mistake of starting a second job, not a same-second race.

Example:
    with RunLock("runs/r50"):           # UsageError naming the holder when another run has it
        train()
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid

import tensorflow as tf
from absl import logging

from transfer_tf.errors import UsageError
from transfer_tf.io_errors import unwritable_error, write_error_reason

LOCK_FILE = "run.lock"
HEARTBEAT_SECONDS = 30.0
# 20 missed heartbeats: far beyond a slow step or a loaded machine, short enough for a preempted
# VM's lock not to block its replacement for long.
STALE_SECONDS = 600.0


class RunLockError(UsageError):
    """Another live run holds the lock; the message names it and how to take over."""


def _is_local(path: str) -> bool:
    return "://" not in path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """The lock of one run directory (see module doc). Reentrant use is an error.

    Args:
      model_dir: the run directory (created if missing; removed again at release when the lock
        was all it held).
      flag: how the user named the directory, for messages.
      heartbeat_seconds / stale_seconds: refresh period, and the heartbeat age that makes a lock
        on another host stale.
    """

    def __init__(
        self,
        model_dir: str,
        *,
        flag: str = "--model_dir",
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.flag = flag
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.token = uuid.uuid4().hex
        self._started = time.time()
        self._held = False
        self._created_dir = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- file content --------------------------------------------------------------------------
    def _content(self) -> str:
        return json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": datetime.datetime.fromtimestamp(self._started).isoformat(" ", "seconds"),
                "heartbeat": time.time(),
                "command": " ".join(sys.argv),
                "token": self.token,
            }
        )

    def read(self) -> dict | None:
        """The lock file's content; None when there is none; `{"unreadable": mtime}` when it
        cannot be parsed (a writer that died between create and write on an object store)."""
        try:
            with tf.io.gfile.GFile(self.path) as f:
                text = f.read()
        except tf.errors.NotFoundError:
            return None
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                return data
        except ValueError:
            pass
        try:
            return {"unreadable": tf.io.gfile.stat(self.path).mtime_nsec / 1e9}
        except tf.errors.NotFoundError:
            return None

    def stale_reason(self, holder: dict) -> str | None:
        """Why `holder` (a lock file's content) is stale, or None when its run may be alive."""
        now = time.time()
        if "unreadable" in holder:
            age = now - holder["unreadable"]
            return f"it is unreadable and {age:.0f} s old" if age > self.stale_seconds else None
        pid, host = holder.get("pid"), holder.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
            return f"its process {pid} on this host is gone"
        age = now - float(holder.get("heartbeat", 0))
        if age > self.stale_seconds:
            return f"its last heartbeat is {age:.0f} s old (> {self.stale_seconds:.0f} s)"
        return None

    def _held_message(self, holder: dict) -> str:
        if "unreadable" in holder:
            who = "a run whose lock file is not readable yet"
        else:
            age = time.time() - float(holder.get("heartbeat", 0))
            who = (
                f"another run (host {holder.get('host')}, pid {holder.get('pid')}, started "
                f"{holder.get('started')}, last heartbeat {max(age, 0):.0f} s ago)"
            )
        return (
            f"{self.flag} '{self.model_dir}' is in use by {who}: wait for it to end or use "
            f"another {self.flag}; if that run is dead, delete {self.path} (a lock whose process "
            f"is gone on its host, or whose heartbeat is older than {self.stale_seconds:.0f} s, "
            "is taken over automatically)"
        )

    # -- create / take over --------------------------------------------------------------------
    def _create(self) -> bool:
        """Creates the lock file if there is none; True when this lock now holds it."""
        if _is_local(self.path):
            tmp = f"{self.path}.tmp-{os.getpid()}-{self.token[:8]}"
            with open(tmp, "w") as f:
                f.write(self._content())
            try:
                os.link(tmp, self.path)  # atomic create-if-absent, with the content in place
                return True
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
        if tf.io.gfile.exists(self.path):
            return False
        with tf.io.gfile.GFile(self.path, "w") as f:
            f.write(self._content())
        time.sleep(1.0)  # a simultaneous starter's write lands within this; the last one wins
        holder = self.read()
        return bool(holder) and holder.get("token") == self.token

    def _break(self, holder: dict) -> None:
        """Removes the stale lock `holder`, unless another process replaced it meanwhile."""
        if not _is_local(self.path):
            with contextlib.suppress(tf.errors.NotFoundError):
                tf.io.gfile.remove(self.path)
            return
        aside = f"{self.path}.stale-{self.token[:8]}"
        try:
            os.rename(self.path, aside)  # atomic: of two takers, one gets the file
        except FileNotFoundError:
            return
        try:
            with open(aside) as f:
                moved = json.loads(f.read())
        except ValueError:
            moved = {}
        if "unreadable" not in holder and moved.get("token") != holder.get("token"):
            # A fresh lock taken between our read and the rename: put it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        os.remove(aside)

    def acquire(self) -> None:
        """Takes the lock (creating `model_dir`), or raises.

        Raises:
          RunLockError: a live run holds it (one line naming host, pid, start, heartbeat age).
          errors.OutputError: `model_dir` cannot be written (this is the job's writable check).
        """
        if self._held:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        try:
            self._created_dir = not tf.io.gfile.isdir(self.model_dir)
            tf.io.gfile.makedirs(self.model_dir)
            for _ in range(3):
                if self._create():
                    break
                holder = self.read()
                if holder is None:
                    continue  # released meanwhile
                why = self.stale_reason(holder)
                if why is None:
                    raise RunLockError(self._held_message(holder))
                logging.warning(
                    "taking over the lock %s of a dead run (%s): %s", self.path, why, holder
                )
                self._break(holder)
            else:
                raise RunLockError(self._held_message(self.read() or {}))
        except (RunLockError, RuntimeError):
            raise
        except Exception as e:
            reason = write_error_reason(e)
            if reason is None:
                raise
            raise unwritable_error(self.flag, self.model_dir, reason) from None
        self._held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    # -- heartbeat / release -------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                holder = self.read()
                if not holder or holder.get("token") != self.token:
                    logging.error(
                        "%s was taken over by another run (%s): both now write %s",
                        self.path,
                        holder,
                        self.model_dir,
                    )
                    return
                tmp = f"{self.path}.tmp-{os.getpid()}-{self.token[:8]}"
                with tf.io.gfile.GFile(tmp, "w") as f:
                    f.write(self._content())
                tf.io.gfile.rename(tmp, self.path, overwrite=True)
            except Exception as e:  # noqa: BLE001  (a missed heartbeat is not fatal)
                logging.warning("could not refresh %s: %s", self.path, e)

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if it is still this run's; removes
        `model_dir` when this lock created it and nothing else was written there."""
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            holder = self.read()
            if holder and holder.get("token") == self.token:
                tf.io.gfile.remove(self.path)
            if self._created_dir and _is_local(self.model_dir):
                os.rmdir(self.model_dir)  # fails, as it should, unless the lock was all it held

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
