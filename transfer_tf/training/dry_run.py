"""`--dry_run` of the training binaries: resolve everything a run would, train nothing.

A dry run resolves the config (file, `--set`, flag shorthands), the data check against the
builders' manifests (local shards only: it reads no remote files), the strategy plan (what
`strategy: auto` becomes on this machine, hosts, replicas, per-replica batch) and the step plan
(pretraining: steps per epoch, total, checkpoint/eval cadence; fine-tuning: the phases with their
global step ranges), and returns them as one JSON-ready dict. It builds no strategy (a
multi-worker one would wait for its peers), no model, and writes nothing.

Example:
    plan = pretraining_plan(cfg, "runs/r50", cluster_info)
    print(json.dumps(plan, indent=2))
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from transfer_tf.config import ExperimentConfig, to_dict
from transfer_tf.distribute.cluster import ClusterInfo
from transfer_tf.errors import UsageError
from transfer_tf.training import strategy as strategy_lib
from transfer_tf.training.run_setup import checked_config, plan_steps


def _is_local(pattern: str) -> bool:
    return bool(pattern) and "://" not in pattern and not pattern.startswith("tfds:")


def checked_data(cfg: ExperimentConfig) -> tuple[ExperimentConfig, str]:
    """`run_setup.checked_config` when the train data is local; remote data is left unread."""
    if _is_local(cfg.data.train_pattern):
        return checked_config(cfg), "checked against the builders' manifests"
    where = cfg.data.train_pattern or "(no data.train_pattern)"
    return cfg, f"not read: {where} is remote (the run checks it before its first step)"


def strategy_plan(cfg: ExperimentConfig, cluster: ClusterInfo) -> dict:
    """The strategy the run would build and how the global batch splits over its replicas.

    Replicas come from this host's devices (TPU chips, GPUs) times the hosts in TF_CONFIG; a TPU
    named by address reports `replicas: null` (known only once it answers).
    Raises:
      UsageError: the global batch does not divide by a known replica count.
    """
    requested = cfg.train.strategy
    gpus = len(tf.config.list_physical_devices("GPU"))
    chips = strategy_lib.local_tpu_chips()
    name = requested
    if requested == "auto":
        name = strategy_lib.resolve_auto(cfg.train.tpu, tpu_chips=chips, gpus=gpus)
    if name == "tpu":
        per_host = chips or None
    elif name == "mirrored":
        per_host = gpus or len(tf.config.list_logical_devices("CPU"))
    elif name == "multi_worker_mirrored":
        per_host = max(gpus, 1)
    else:
        per_host = 1
    hosts = cluster.num_workers
    replicas = per_host * hosts if per_host else None
    batch = cfg.train.global_batch_size
    if replicas and batch % replicas:
        raise UsageError(
            f"config key 'train.global_batch_size': {batch} is not divisible by the {replicas} "
            f"replicas of strategy {name!r} ({hosts} host(s) x {per_host})"
        )
    return {
        "requested": requested,
        "strategy": name,
        "tpu": cfg.train.tpu or os.environ.get("TPU_NAME", "") or ("local" if chips else ""),
        "hosts": hosts,
        "task": f"{cluster.task_type}:{cluster.task_index}",
        "chief": cluster.is_chief,
        "local_devices": {"gpu": gpus, "tpu": chips},
        "replicas_per_host": per_host,
        "replicas": replicas,
        "global_batch_size": batch,
        "per_replica_batch_size": batch // replicas if replicas else None,
        "mixed_precision": cfg.train.mixed_precision,
        "xla": cfg.train.xla,
    }


def _resume_step(model_dir: str) -> int | str:
    """The step a rerun would resume from (0: a new run); remote dirs are not read."""
    if "://" in model_dir:
        return "not read (remote model_dir)"
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def pretraining_plan(cfg: ExperimentConfig, model_dir: str, cluster: ClusterInfo) -> dict:
    """The dry-run report of `pipelines.pretrain` (module doc)."""
    cfg, data = checked_data(cfg)
    per_epoch, total = plan_steps(cfg)
    train = cfg.train
    eval_every = (
        int(round(train.eval_every_epochs * (per_epoch or total)))
        if cfg.data.eval_pattern and train.eval_every_epochs > 0
        else 0
    )
    return {
        "job": "pretrain",
        "model_dir": model_dir,
        "resume_from_step": _resume_step(model_dir),
        "data": data,
        "strategy": strategy_plan(cfg, cluster),
        "steps": {
            "steps_per_epoch": per_epoch,
            "total_steps": total,
            "checkpoint_every_steps": train.checkpoint_every_steps,
            "eval_every_steps": eval_every,
            "steps_per_execution": train.steps_per_execution,
        },
        "config": to_dict(cfg),
    }


def finetuning_plan(
    cfg: ExperimentConfig, model_dir: str, cluster: ClusterInfo, init_checkpoint: str | None
) -> dict:
    """The dry-run report of `pipelines.finetune` (module doc): its phases as the run resolves
    them (`transfer.phases.resolve_phases`, after the same unread-key check)."""
    from transfer_tf.config import ConfigError
    from transfer_tf.config_unread import finetune_unread_problem
    from transfer_tf.transfer import phases as phases_lib
    from transfer_tf.transfer import schedule

    problem = finetune_unread_problem(cfg)
    if problem:
        raise ConfigError(problem)
    if init_checkpoint:
        transfer = dataclasses.replace(cfg.transfer, init_checkpoint=init_checkpoint)
        cfg = dataclasses.replace(cfg, transfer=transfer)
    cfg, data = checked_data(cfg)
    cfg = phases_lib.preset_config(cfg)
    phases = phases_lib.resolve_phases(cfg)
    return {
        "job": "finetune",
        "model_dir": model_dir,
        "resume_from_step": _resume_step(model_dir),
        "init_checkpoint": cfg.transfer.init_checkpoint or None,
        "data": data,
        "strategy": strategy_plan(cfg, cluster),
        "steps": {
            "total_steps": schedule.total_steps(phases),
            "checkpoint_every_steps": cfg.train.checkpoint_every_steps,
            "phases": schedule.describe(phases),
        },
        "config": to_dict(cfg),
    }
