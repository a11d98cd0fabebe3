"""Manifests: what a build wrote, summed from the shards' sidecars (see `sharded_writer`).

`write_manifests` writes a task's partial manifest and, once every shard of the plan is finished
(by any task), the full one: counts per split, shard and class, skipped and converted files,
the builder's counters and its header. No timestamps: identical inputs, identical manifest.

Example:
    results = write_shards(specs, encoder, options)
    write_manifests("/out/manifest.json", specs, encoder, options, results, {"builder": "x"})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from absl import logging

from transfer_tf.atomic_io import write_json_atomic
from transfer_tf.data.builders.sharded_writer import (
    Encoder,
    ShardSpec,
    WriteOptions,
    fingerprint,
    read_finished,
    shard_name,
    task_shards,
)
from transfer_tf.data.builders.write_errors import writing


def collect_finished(specs: Sequence[ShardSpec], encoder: Encoder) -> dict[str, dict] | None:
    """Sidecars of all shards in the plan if every one is finished (any task), else None."""
    out = {}
    for spec in specs:
        info = read_finished(spec, fingerprint(spec, encoder))
        if info is None:
            return None
        out[spec.name] = info
    return out


def summarize(specs: Sequence[ShardSpec], infos: dict[str, dict]) -> dict[str, Any]:
    """Per-split counts, shard list, per-class counts, skipped/converted files (plan order)."""
    splits: dict[str, dict] = {}
    skipped, converted = [], []
    counters: Counter[str] = Counter()
    for spec in specs:
        info = infos.get(spec.name)
        if info is None:
            continue
        s = splits.setdefault(
            spec.split,
            {
                "num_shards": spec.num_shards,
                "records": 0,
                "skipped": 0,
                "shards": [],
                "per_class": Counter(),
            },
        )
        s["records"] += info["records"]
        s["skipped"] += len(info["skipped"])
        s["shards"].append({"file": spec.name, "records": info["records"], "bytes": info["bytes"]})
        s["per_class"].update(info["per_class"])
        counters.update(info["counters"])
        skipped += [dict(split=spec.split, **x) for x in info["skipped"]]
        converted += [dict(split=spec.split, **x) for x in info["converted"]]
    for s in splits.values():
        s["per_class"] = dict(sorted(s["per_class"].items(), key=_class_sort_key))
    return {
        "splits": splits,
        "counters": dict(sorted(counters.items())),
        "skipped": skipped,
        "converted": converted,
    }


def _class_sort_key(kv: tuple[str, int]) -> tuple[int, int | str]:
    key = kv[0]
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def write_manifests(
    manifest_path: str,
    specs: Sequence[ShardSpec],
    encoder: Encoder,
    options: WriteOptions,
    task_results: dict[str, dict],
    header: dict[str, Any],
) -> str | None:
    """Writes this task's partial manifest (multi-task runs) and, once every shard of the plan is
    finished (by any task), the full manifest. Returns the full manifest's path or None.

    Partial manifests are `<manifest>.task-00001-of-00004.json`; a task that finds all shards
    finished writes the full one, so whichever task ends last completes it (or rerun any task).
    """
    if options.num_tasks > 1:
        stem = manifest_path[: -len(".json")] if manifest_path.endswith(".json") else manifest_path
        partial = f"{stem}.{shard_name('task', options.task_index, options.num_tasks)}.json"
        mine = task_shards(specs, options.task_index, options.num_tasks)
        with writing(partial):
            write_json_atomic(
                partial,
                {**header, "complete": False, **summarize(mine, task_results)},
                indent=1,
            )
    infos = collect_finished(specs, encoder)
    if infos is None:
        logging.info(
            "Manifest %s not written yet: shards of other tasks are unfinished", manifest_path
        )
        return None
    with writing(manifest_path):
        write_json_atomic(
            manifest_path, {**header, "complete": True, **summarize(specs, infos)}, indent=1
        )
    return manifest_path
