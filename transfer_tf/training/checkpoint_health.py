"""Which checkpoints of a run are intact, what is wrong with a damaged one, and writes that fail.

A checkpoint `DIR/ckpt-N` is two kinds of files: `ckpt-N.index` (a table of every tensor's place)
and `ckpt-N.data-0000K-of-0000M` (the tensors); the state file `DIR/checkpoint` names the latest.
A truncated or missing file of the newest checkpoint (a disk that filled during a copy, a sync that
stopped half way) must not stop a run that has intact older ones:

- `list_checkpoints` lists every checkpoint whose files or state entry exist, newest (highest step)
  first, damaged ones included (`tf.train.latest_checkpoint` says "none" when the newest `.index`
  is missing, although older checkpoints are intact).
- `find_damage` reads every tensor back and names the file that fails (None when intact).
- `restore_newest` restores the newest checkpoint that restores, warning about each damaged one; a
  training run (`set_aside=True`) moves the damaged files into `DIR/damaged/` (never deletes them)
  so that saving that step again cannot overwrite them or get confused by them.
- `save_or_clean` saves through a `tf.train.CheckpointManager`; when the write fails (disk full,
  read-only) it removes what the failed write created (`ckpt-N_temp*` folders, a partial
  `ckpt-N.*`, state-file temporaries), so the previous checkpoint stays the latest, and raises an
  `OutputError` naming the path and the OS error.

Example:
    prefix = restore_newest(lambda p: checkpoint.restore(p).assert_consumed(), "runs/x/checkpoints")
    save_or_clean(manager, step=1200)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from transfer_tf.errors import OutputError, UsageError
from transfer_tf.io_errors import write_error_reason

STATE_FILE = "checkpoint"
DAMAGED_SUBDIR = "damaged"
_DATA = re.compile(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$")
# What a failed or killed save leaves: TF's sharded-save folder, and temp files of the state file
# (`checkpoint.tmp<hex>`) and of bundle writers (`*.tempstate<n>`).
_DEBRIS = re.compile(r"(_temp($|[_/])|_temp_[0-9a-f]+|^checkpoint\.tmp|\.tempstate\d*$)")


def checkpoint_step(prefix: str) -> int:
    """The trailing number of a checkpoint prefix (`.../ckpt-1200` -> 1200), -1 if it has none."""
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def _short(error: BaseException) -> str:
    """An error's first line without TensorFlow's `{{function_node ...}}` noise, at most 160
    characters."""
    text = str(getattr(error, "message", "") or error).strip().splitlines()
    line = re.sub(r"\{\{[^}]*\}\}\s*", "", text[0] if text else type(error).__name__)
    line = re.sub(r"\s*\[Op:\w+\]$", "", line)
    return line[:160]


def list_checkpoints(ckpt_dir: str) -> list[str]:
    """Checkpoint prefixes in `ckpt_dir`, newest (highest step) first, damaged ones included:
    the state file's entries and every prefix with an `.index` or `.data-*` file."""
    if not tf.io.gfile.isdir(ckpt_dir):
        return []
    names: set[str] = set()
    try:
        state = tf.train.get_checkpoint_state(ckpt_dir)
    except Exception as e:  # noqa: BLE001  (a garbled state file: the files on disk still count)
        logging.warning("%s: unreadable (%s); using the checkpoint files found", STATE_FILE, e)
        state = None
    if state is not None:
        # Entries by name: a run dir copied elsewhere keeps absolute paths to the old place.
        for path in [*state.all_model_checkpoint_paths, state.model_checkpoint_path]:
            if path:
                names.add(os.path.basename(path))
    for entry in tf.io.gfile.listdir(ckpt_dir):
        entry = entry.rstrip("/")
        if _DEBRIS.search(entry):
            continue
        if entry.endswith(".index"):
            names.add(entry[: -len(".index")])
        elif match := _DATA.match(entry):
            names.add(match.group("prefix"))
    return sorted(
        (os.path.join(ckpt_dir, n) for n in names),
        key=lambda p: (checkpoint_step(p), p),
        reverse=True,
    )


def _data_files(prefix: str) -> list[str]:
    return sorted(tf.io.gfile.glob(f"{prefix}.data-*"))


def _data_name(prefix: str) -> str:
    files = _data_files(prefix)
    return files[0] if len(files) == 1 else f"{prefix}.data-*"


def find_damage(prefix: str) -> str | None:
    """None when every tensor of checkpoint `prefix` reads back; otherwise what is wrong, naming
    the file: `'<path>.index is missing'`, `'<path>.data-00000-of-00001 cannot be read (...)'`.

    Reads the whole checkpoint (a restore reads as much): call it when a restore failed, or before
    a run depends on a checkpoint it did not write.
    """
    index = f"{prefix}.index"
    if not tf.io.gfile.exists(index):
        return f"{index} is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as e:  # noqa: BLE001  (any failure here is the index's)
        return f"{index} cannot be read ({_short(e)})"
    if not _data_files(prefix):
        return f"{prefix}.data-* is missing"
    try:
        for key, dtype in sorted(dtypes.items()):
            # RestoreV2 reads every dtype (an input iterator's state is a variant, which the
            # checkpoint reader's get_tensor cannot convert) and checks each tensor's checksum.
            tf.raw_ops.RestoreV2(
                prefix=prefix, tensor_names=[key], shape_and_slices=[""], dtypes=[dtype]
            )
    except Exception as e:  # noqa: BLE001  (truncation, bad checksum, missing shard)
        return f"{_data_name(prefix)} cannot be read ({_short(e)})"
    return None


def restore_asserted(checkpoint: tf.train.Checkpoint, prefix: str, mismatch: str) -> None:
    """Restores `prefix` into `checkpoint`, asserting the file holds every object of it (values the
    reader does not use, e.g. an optimizer, may be left over). A missing object is a UsageError
    `checkpoint '<prefix>' <mismatch>: <first missing>`; a damaged file raises TensorFlow's error
    (`find_damage` tells which file)."""
    status = checkpoint.restore(prefix)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        first = str(e).strip().splitlines()[0][:300]
        raise UsageError(f"checkpoint '{prefix}' {mismatch}: {first}") from None
    status.expect_partial()


def _try_restore(restore: Callable[[str], object], prefix: str) -> str | None:
    """`restore(prefix)`; None when it worked, what is damaged when it failed on a damaged
    checkpoint (`find_damage`). Any other failure propagates (a UsageError of `restore` too)."""
    try:
        restore(prefix)
    except UsageError:
        raise
    except Exception:
        why = find_damage(prefix)
        if why is None:
            raise
        return why
    return None


def restore_named(restore: Callable[[str], object], prefix: str, flag: str) -> None:
    """`restore(prefix)` for a checkpoint the user named (`flag`): no fallback, but a damaged one
    is a one-line UsageError naming the file and the intact checkpoints beside it."""
    why = _try_restore(restore, prefix)
    if why is not None:
        raise damaged_error(prefix, why, flag)


def intact_checkpoints(ckpt_dir: str, exclude: str = "", limit: int = 3) -> list[str]:
    """Up to `limit` intact checkpoints of `ckpt_dir` other than `exclude`, newest first (each is
    read in full: for error messages, not the happy path)."""
    found = []
    for prefix in list_checkpoints(ckpt_dir):
        if prefix != exclude and find_damage(prefix) is None:
            found.append(prefix)
            if len(found) >= limit:
                break
    return found


def damaged_error(prefix: str, why: str, flag: str) -> UsageError:
    """The one-line error for a damaged checkpoint that the user named (or that a source needs),
    listing the intact ones they could use instead."""
    others = intact_checkpoints(os.path.dirname(prefix), exclude=prefix)
    instead = (
        f"intact checkpoints: {', '.join(others)} (pass one as {flag})"
        if others
        else "no intact checkpoint beside it"
    )
    return UsageError(f"{flag}: checkpoint '{prefix}' is damaged: {why}; {instead}")


def restore_newest(
    restore: Callable[[str], object], ckpt_dir: str, *, set_aside: bool = False
) -> str | None:
    """Calls `restore(prefix)` on the newest checkpoint of `ckpt_dir`, then on older ones while
    the checkpoint is damaged (`find_damage`); returns the prefix restored, None when there is
    no checkpoint.

    Each damaged checkpoint is logged as a warning naming its file. `set_aside` (the chief of a
    training run) moves its files into `ckpt_dir/damaged/` and rewrites the state file, so the
    run's next saves neither overwrite nor list it.
    Raises:
      UsageError: every checkpoint is damaged (never a silent restart from step 0), or the one
        `restore` raised (e.g. the checkpoint does not match the run); other errors of an intact
        checkpoint propagate.
    """
    damaged = []
    for prefix in list_checkpoints(ckpt_dir):
        why = _try_restore(restore, prefix)
        if why is not None:
            logging.warning(
                "checkpoint %s is damaged (%s): falling back to the one before it", prefix, why
            )
            damaged.append((prefix, why))
            continue
        if damaged and set_aside:
            _set_aside(ckpt_dir, [p for p, _ in damaged], prefix)
        return prefix
    if damaged:
        listed = "; ".join(why for _, why in damaged)
        raise UsageError(
            f"every checkpoint in '{ckpt_dir}' is damaged ({listed}): move them elsewhere to "
            "start afresh, or restore the folder from a copy"
        )
    return None


def _set_aside(ckpt_dir: str, damaged: list[str], latest: str) -> None:
    """Moves the files of `damaged` checkpoints into `ckpt_dir/damaged/` and makes `latest` the
    state file's latest (the rest of its list kept)."""
    folder = os.path.join(ckpt_dir, DAMAGED_SUBDIR)
    tf.io.gfile.makedirs(folder)
    for prefix in damaged:
        name = os.path.basename(prefix)
        for path in tf.io.gfile.glob(f"{prefix}.*"):
            target = os.path.join(folder, os.path.basename(path))
            n = 1
            while tf.io.gfile.exists(target):  # the same step damaged twice: keep both
                target = os.path.join(folder, f"{os.path.basename(path)}.{n}")
                n += 1
            tf.io.gfile.rename(path, target)
        logging.warning("moved the files of damaged checkpoint %s to %s/", name, folder)
    _write_state(ckpt_dir, latest, exclude=damaged)


def _write_state(ckpt_dir: str, latest: str, exclude: list[str]) -> None:
    """Rewrites the state file: `latest` first in meaning, every other checkpoint whose `.index`
    exists listed oldest first with its timestamp (kept from the old state, or the file's time),
    so tf.train.CheckpointManager goes on rotating them. Names are relative, as the manager
    writes them (a copied run dir still works)."""
    from transfer_tf.atomic_io import write_text_atomic

    old: dict[str, float] = {}
    try:
        state = tf.train.get_checkpoint_state(ckpt_dir)
        if state is not None:
            for path, stamp in zip(
                state.all_model_checkpoint_paths,
                state.all_model_checkpoint_timestamps,
                strict=False,
            ):
                old[os.path.basename(path)] = stamp
    except Exception:  # noqa: BLE001  (a garbled state file is replaced)
        pass
    skip = {os.path.basename(p) for p in exclude}
    kept = []
    for prefix in reversed(list_checkpoints(ckpt_dir)):  # oldest first, as the manager lists
        name = os.path.basename(prefix)
        if name in skip or not tf.io.gfile.exists(f"{prefix}.index"):
            continue
        stamp = old.get(name) or tf.io.gfile.stat(f"{prefix}.index").mtime_nsec / 1e9
        kept.append((name, stamp))
    lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name, _ in kept]
    lines += [f"all_model_checkpoint_timestamps: {stamp!r}" for _, stamp in kept]
    write_text_atomic(os.path.join(ckpt_dir, STATE_FILE), "\n".join(lines) + "\n")


def remove_debris(ckpt_dir: str) -> list[str]:
    """Removes what killed or failed saves left in `ckpt_dir` (`ckpt-N_temp*` folders, state-file
    and bundle temporaries); returns the names removed. Only a run that holds the run lock may
    call it (another writer's save in progress would look the same)."""
    if not tf.io.gfile.isdir(ckpt_dir):
        return []
    removed = []
    for entry in tf.io.gfile.listdir(ckpt_dir):
        entry = entry.rstrip("/")
        if _DEBRIS.search(entry):
            _remove(os.path.join(ckpt_dir, entry))
            removed.append(entry)
    if removed:
        logging.warning("removed the debris of an earlier failed save in %s: %s", ckpt_dir, removed)
    return removed


def _remove(path: str) -> None:
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    except Exception as e:  # noqa: BLE001  (best effort: the message of the caller matters more)
        logging.warning("could not remove %s: %s", path, e)


def save_or_clean(manager: tf.train.CheckpointManager, step: int) -> str:
    """`manager.save(checkpoint_number=step)`; on a failed write (disk full, read-only, no
    permission), removes what that write created and raises OutputError naming the checkpoint,
    the OS error and the checkpoint that is still the latest."""
    ckpt_dir = manager.directory
    before = set(tf.io.gfile.listdir(ckpt_dir)) if tf.io.gfile.isdir(ckpt_dir) else set()
    try:
        return manager.save(checkpoint_number=step)
    except Exception as e:
        reason = write_error_reason(e)
        if reason is None:
            raise
        prefix = os.path.join(ckpt_dir, f"ckpt-{step}")
        name = os.path.basename(prefix)
        if tf.io.gfile.isdir(ckpt_dir):
            for entry in set(tf.io.gfile.listdir(ckpt_dir)) - before:
                entry = entry.rstrip("/")
                if entry.startswith((f"{name}_temp", f"{name}.")) or _DEBRIS.search(entry):
                    _remove(os.path.join(ckpt_dir, entry))
        latest = manager.latest_checkpoint
        raise OutputError(
            f"cannot write checkpoint '{prefix}': {reason}; removed the partial write, the latest "
            f"checkpoint is still {repr(latest) if latest else 'none'}: free space (or fix the "
            "permissions) and rerun the same command to resume from it"
        ) from None
