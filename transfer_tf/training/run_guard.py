"""What a training job holds while it writes its run directory.

`guarded_run(model_dir)` wraps pretraining and fine-tuning after their input checks:
1. the run lock (`run_lock.RunLock`, the chief only), whose creation is also the check that
   `model_dir` is writable, before any data is read;
2. a clean `checkpoints/`: debris of saves that a kill or a full disk interrupted
   (`ckpt-N_temp*`), safe to remove once the lock is held;
3. the stop signals (`signals.StopSignals`): Ctrl-C / SIGTERM end the job with a checkpoint at
   the step reached; a second signal exits at once, releasing the lock.

A stop requested after the training loop ended (during a final eval) still ends the job with
`RunInterrupted`, naming the latest checkpoint. Under MultiWorkerMirrored (TF_CONFIG with more
than one task) signals keep their default action: workers receive them at different steps and a
save is a collective op, so a stop must be agreed across workers first (left to coordinated
preemption handling).

Example:
    with guarded_run("runs/r50"):
        trainer.train(...)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from transfer_tf.training import checkpoint_health, preemption, signals
from transfer_tf.training import strategy as strategy_lib
from transfer_tf.training.checkpoints import checkpoint_dir
from transfer_tf.training.run_lock import RunLock


def _multi_worker() -> bool:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    return sum(len(tasks) for tasks in cluster.values()) > 1


@contextlib.contextmanager
def guarded_run(model_dir: str, flag: str = "--model_dir") -> Iterator[None]:
    """Holds the lock, cleans the checkpoint debris and handles stop signals (module doc).

    Raises:
      RunLockError: another live run writes `model_dir`.
      OutputError: `model_dir` cannot be written.
      RunInterrupted: a stop signal arrived after the training loop ended.
    """
    lock = RunLock(model_dir, flag=flag) if strategy_lib.is_chief(None) else None
    if lock is not None:
        lock.acquire()
    try:
        if lock is not None:
            checkpoint_health.remove_debris(checkpoint_dir(model_dir))
        stop = signals.StopSignals(on_abort=[lock.release] if lock is not None else [])
        # Several workers: SIGTERM is a notice that PreemptionCheckpointHandler acts on
        # (`training.preemption`: every worker saves the same step, then all exit 143).
        with stop if not _multi_worker() else preemption.sigterm_notice():
            yield
            if stop.signum is not None:
                latest = checkpoint_health.list_checkpoints(checkpoint_dir(model_dir))
                raise signals.RunInterrupted(stop.signum, None, latest[0] if latest else None)
    finally:
        if lock is not None:
            lock.release()
