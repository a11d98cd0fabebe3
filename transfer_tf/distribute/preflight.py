"""Checks run before a distributed job starts, so that mistakes fail in one line and in seconds.

Without them a wrong TPU address blocks forever inside `initialize_tpu_system`, a float16 config
reaches the TPU compiler, and two processes with a `TF_CONFIG` but `--strategy=mirrored` train two
unrelated models into one directory.

Example:
    info = cluster.configure_cluster_from_flags()
    cfg = load_config(FLAGS.config, FLAGS.set)
    check_distributed_config(cfg, info)          # before make_strategy
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from transfer_tf.config import ConfigError, ExperimentConfig
from transfer_tf.distribute.cluster import ClusterInfo
from transfer_tf.errors import UsageError

# A TPU worker that does not answer a TCP connect in this time is not there.
TPU_CONNECT_TIMEOUT_S = 10.0


def check_tpu_address(tpu: str, timeout_s: float = TPU_CONNECT_TIMEOUT_S) -> None:
    """For a `grpc://HOST:PORT` TPU address, checks that something listens there.

    TPU names (`my-tpu`, `local`, empty = TPU_NAME or the TPU VM's own) go to the cluster
    resolver unchanged; only explicit gRPC addresses can be probed without cloud APIs.
    Raises:
      UsageError: malformed address, or nothing accepting connections within `timeout_s`.
    """
    if not tpu.startswith("grpc://"):
        return
    parsed = urlparse(tpu)
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise UsageError(f"--tpu: {tpu!r} is not grpc://HOST:PORT (e.g. grpc://10.0.0.2:8470)")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(f"--strategy=tpu: no TPU answers at '{tpu}' ({reason})") from None


def check_distributed_config(cfg: ExperimentConfig, cluster: ClusterInfo) -> None:
    """Config constraints of the chosen strategy and cluster (ConfigError/UsageError naming keys).

    - `tpu`: `train.mixed_precision` must be `bfloat16` or `auto` (the TPU's native matmul type; float16
      has no TPU units and float32 wastes them). Shapes are static by construction: train batches
      use drop_remainder, images are `data.image_size` square. The global batch must split evenly
      over the replicas: checked once the strategy says how many there are
      (`strategy.per_replica_batch_size`), since cores per host differ (v3: 8, v4: 4, v5e: 1-8).
    - a multi-worker TF_CONFIG: `train.strategy` must be `multi_worker_mirrored` (anything else
      would train N unrelated models into one model_dir), and the global batch must divide by the
      number of workers.
    - `multi_worker_mirrored` requires no cluster: a lone process trains as one worker.
    """
    strategy = cfg.train.strategy
    if strategy == "tpu" and cfg.train.mixed_precision not in ("bfloat16", "auto"):
        raise ConfigError(
            f"config key 'train.mixed_precision': TPU training runs in bfloat16 "
            f"(got {cfg.train.mixed_precision!r}); set train.mixed_precision=bfloat16"
        )
    if strategy == "tpu":
        check_tpu_address(cfg.train.tpu)
    if cluster.is_multi_worker and strategy != "multi_worker_mirrored":
        raise UsageError(
            f"TF_CONFIG describes {cluster.num_workers} workers but train.strategy is "
            f"{strategy!r}; use --strategy=multi_worker_mirrored"
        )
    if cluster.is_multi_worker and cfg.train.global_batch_size % cluster.num_workers:
        raise ConfigError(
            f"config key 'train.global_batch_size': {cfg.train.global_batch_size} is not divisible "
            f"by the {cluster.num_workers} workers"
        )
